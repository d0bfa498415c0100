//! A machine with a network of its own: only its loopback, as two machines
//! each have their own ports, with the host's loopback services it needs
//! (the emulator, its instance metadata) forwarded through Unix sockets in
//! a shared directory: on the machine, `systemd-socket-proxyd` listens on
//! `127.0.0.1:<port>` and connects to `<dir>/<port>.sock`; on the host, a
//! thread accepts there and connects to `127.0.0.1:<port>`. Everything stays
//! on loopback, and the machine reaches AWS at the same addresses as its
//! environment names.

use std::net::{Shutdown, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the sockets are, on the machine.
pub(crate) const MOUNT: &str = "/huxley-bridge";

/// The host's side of a machine's forwarded ports; stops when dropped.
pub(crate) struct Bridge {
    pub(crate) dir: PathBuf,
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
}

impl Bridge {
    /// Forwards each of `ports` from the machine to the host's loopback.
    pub(crate) fn start(name: &str, ports: &[u16]) -> Bridge {
        let dir = std::env::temp_dir().join(format!("huxley-bridge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the bridge's directory");
        let stop = Arc::new(AtomicBool::new(false));
        for &port in ports {
            let listener =
                UnixListener::bind(dir.join(format!("{port}.sock"))).expect("bind the bridge");
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    std::thread::spawn(move || forward(stream, port));
                }
            });
        }
        Bridge {
            dir,
            ports: ports.to_vec(),
            stop,
        }
    }

    /// The machine's side: a socket unit and its proxy for each port,
    /// enabled, written into the machine's files under `tree`.
    pub(crate) fn install(&self, tree: &Path) {
        let units = tree.join("etc/systemd/system");
        let wants = units.join("sockets.target.wants");
        std::fs::create_dir_all(&wants).expect("sockets.target.wants");
        for port in &self.ports {
            let name = format!("huxley-test-bridge-{port}");
            std::fs::write(
                units.join(format!("{name}.socket")),
                format!(
                    "[Unit]\nDescription=the host's 127.0.0.1:{port} (test bridge)\n\n[Socket]\nListenStream=127.0.0.1:{port}\n\n[Install]\nWantedBy=sockets.target\n"
                ),
            )
            .expect("socket unit");
            std::fs::write(
                units.join(format!("{name}.service")),
                format!(
                    "[Unit]\nDescription=the host's 127.0.0.1:{port} (test bridge)\n\n[Service]\nExecStart=/usr/lib/systemd/systemd-socket-proxyd {MOUNT}/{port}.sock\n"
                ),
            )
            .expect("service unit");
            let link = wants.join(format!("{name}.socket"));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("/etc/systemd/system/{name}.socket"), link)
                .expect("enable the socket");
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for port in &self.ports {
            // Wakes the accepting thread, which then ends.
            let _ = UnixStream::connect(self.dir.join(format!("{port}.sock")));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies both ways between a machine's connection and the host's port.
fn forward(mut machine: UnixStream, port: u16) {
    let Ok(mut host) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let (Ok(mut machine_reader), Ok(mut host_writer)) = (machine.try_clone(), host.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut machine_reader, &mut host_writer);
        let _ = host_writer.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut host, &mut machine);
    let _ = machine.shutdown(Shutdown::Write);
    let _ = up.join();
}
