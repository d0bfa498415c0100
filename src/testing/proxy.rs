//! A proxy on the wire between the SDK and the emulator, for what the
//! emulator never does by itself: a stack in a state it cannot reach (it
//! never rolls a stack back), and AWS's everyday faults (a share of calls
//! answered `503` with a plain-text body, as a load balancer's 503 is,
//! latency, one kind of call that hangs). It also logs every request with
//! the time it arrived, so a test counts what a process sent at the wire,
//! not what the process says it sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The faults put on the wire; the default puts none.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The share of requests (0 to 1) answered `503 Service Unavailable`
    /// with a plain-text body, without reaching the emulator.
    pub unavailable: f64,
    /// Each request waits a random time up to this before it is answered.
    pub latency: Duration,
    /// The seed of those draws, so a failing run can be repeated.
    pub seed: u64,
    /// Requests whose action (see [`Request::action`]) contains this text
    /// are held this long before they are forwarded.
    pub stall: Option<(String, Duration)>,
    /// Requests whose action contains this text are refused with `403
    /// AccessDenied` (which no client retries), as a changed policy would.
    pub deny: Option<String>,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived.
    pub at: Instant,
    /// `service:Operation` for JSON and query protocols
    /// (`dynamodb:UpdateItem`, `ec2:DescribeInstances`), `service:METHOD
    /// path` for REST ones (`route53:POST /2013-04-01/hostedzone/…/rrset/`).
    pub action: String,
    /// Whether the proxy answered it with a fault instead of forwarding it.
    pub failed: bool,
}

/// A running proxy to the emulator.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// A stack whose status `DescribeStacks` answers with another one.
    rewrite: Option<(String, String)>,
    faults: Faults,
    rng: fastrand::Rng,
    log: Vec<Request>,
}

impl Proxy {
    /// Starts a proxy to the emulator on `upstream`, with no fault.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(Mutex::new(State {
            rewrite: None,
            faults: Faults::default(),
            rng: fastrand::Rng::with_seed(0),
            log: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &shared);
                });
            }
        });
        Proxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `stack` report `status` from now on.
    pub fn set_status(&self, stack: &str, status: &str) {
        self.state().rewrite = Some((stack.to_owned(), status.to_owned()));
    }

    /// Whether a status rewrite is still in force.
    pub fn rewriting(&self) -> bool {
        self.state().rewrite.is_some()
    }

    /// Puts `faults` on the wire from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.state();
        state.rng = fastrand::Rng::with_seed(faults.seed);
        state.faults = faults;
    }

    /// Every request seen so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Request> {
        self.state().log.clone()
    }
}

/// What to do with one request, drawn under the lock.
struct Fate {
    delay: Duration,
    fail: bool,
    deny: bool,
}

/// Serves one client connection, one request at a time.
fn serve(client: TcpStream, upstream: u16, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        let Some((head, body)) = read_message(&mut reader)? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&body).into_owned();
        let action = action(&head, &text);
        let fate = decide(state, &action, &text);
        std::thread::sleep(fate.delay);
        if fate.deny {
            let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>denied by the test proxy</Message></Error><RequestId>0</RequestId></ErrorResponse>";
            write!(
                client,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        if fate.fail {
            let body = "Service Unavailable\n";
            write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        // Forward with `Connection: close`, so the answer ends at EOF.
        let mut upstream_conn = TcpStream::connect(("127.0.0.1", upstream))?;
        let head: String = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        upstream_conn.write_all(head.as_bytes())?;
        upstream_conn.write_all(b"Connection: close\r\n\r\n")?;
        upstream_conn.write_all(&body)?;
        let mut answer = Vec::new();
        upstream_conn.read_to_end(&mut answer)?;
        let rewrite = lock(state).rewrite.clone();
        let answer = rewritten(answer, &text, rewrite);
        client.write_all(&answer)?;
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Logs the request and draws its fate; ends a status rewrite when the
/// stack is deleted or changed, as it would end on AWS.
fn decide(state: &Mutex<State>, action: &str, text: &str) -> Fate {
    let mut state = lock(state);
    let ends = text.contains("Action=DeleteStack") || text.contains("Action=ExecuteChangeSet");
    if ends
        && state
            .rewrite
            .as_ref()
            .is_some_and(|(stack, _)| text.contains(stack.as_str()))
    {
        state.rewrite = None;
    }
    let latency = u64::try_from(state.faults.latency.as_millis()).unwrap_or(u64::MAX);
    let mut delay = Duration::from_millis(state.rng.u64(0..=latency));
    if let Some((pattern, stall)) = &state.faults.stall
        && action.contains(pattern.as_str())
    {
        delay += *stall;
    }
    let fail = state.faults.unavailable > 0.0 && state.rng.f64() < state.faults.unavailable;
    let deny = state
        .faults
        .deny
        .as_ref()
        .is_some_and(|pattern| action.contains(pattern.as_str()));
    state.log.push(Request {
        at: Instant::now(),
        action: action.to_owned(),
        failed: fail || deny,
    });
    Fate { delay, fail, deny }
}

/// `service:Operation` of a request, from its signature's credential scope
/// and its target header, `Action=` parameter or method and path.
fn action(head: &str, body: &str) -> String {
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    // `Credential=AKID/20261130/us-west-2/route53/aws4_request`
    let service = header("authorization")
        .and_then(|a| {
            let scope = a.split("Credential=").nth(1)?;
            scope.split('/').nth(3).map(str::to_owned)
        })
        .unwrap_or_else(|| "unsigned".into());
    let operation = header("x-amz-target")
        .and_then(|t| t.rsplit('.').next().map(str::to_owned))
        .or_else(|| {
            body.split('&')
                .find_map(|p| p.strip_prefix("Action="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let line = head.lines().next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or_default();
            let path = words.next().unwrap_or_default();
            format!("{method} {}", path.split('?').next().unwrap_or_default())
        });
    format!("{service}:{operation}")
}

/// Reads one HTTP message (head, body by Content-Length); `None` at EOF.
pub(super) fn read_message(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(line.trim_end_matches(['\r', '\n']));
        head.push('\n');
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

/// The emulator's answer, with the stack's status replaced when a rewrite
/// is in force and this is its `DescribeStacks`.
fn rewritten(answer: Vec<u8>, request: &str, rewrite: Option<(String, String)>) -> Vec<u8> {
    let Some((stack, status)) = rewrite else {
        return answer;
    };
    if !request.contains("Action=DescribeStacks") || !request.contains(stack.as_str()) {
        return answer;
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return answer;
    };
    let Some(start) = body.find("<StackStatus>") else {
        return answer;
    };
    let Some(end) = body[start..].find("</StackStatus>") else {
        return answer;
    };
    let body = format!(
        "{}<StackStatus>{status}{}",
        &body[..start],
        &body[start + end..]
    );
    let head: String = head
        .lines()
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}\r\n", body.len())
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    format!("{head}\r\n{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_by_service_and_operation() {
        let auth = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20261130/us-west-2/dynamodb/aws4_request, SignedHeaders=host";
        let head = format!("POST / HTTP/1.1\n{auth}\nX-Amz-Target: DynamoDB_20120810.UpdateItem\n");
        assert_eq!(action(&head, "{}"), "dynamodb:UpdateItem");
        let head = "POST / HTTP/1.1\nAuthorization: x Credential=a/b/c/ec2/aws4_request\n";
        assert_eq!(
            action(head, "Action=DescribeInstances&Version=2016-11-15"),
            "ec2:DescribeInstances"
        );
        let head = "POST /2013-04-01/hostedzone/Z1/rrset/?x=1 HTTP/1.1\nAuthorization: x Credential=a/b/c/route53/aws4_request\n";
        assert_eq!(
            action(head, "<xml/>"),
            "route53:POST /2013-04-01/hostedzone/Z1/rrset/"
        );
    }
}
