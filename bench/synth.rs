//! Prints a synthetic huxley.toml: `cargo run --example synth -- APPS SERVICES_PER_APP`.
//! Used by bench/plan.sh.

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (Some(Ok(apps)), Some(Ok(services))) = (args.next(), args.next()) else {
        eprintln!("usage: synth APPS SERVICES_PER_APP");
        std::process::exit(2);
    };
    print!("{}", huxley::testing::synth::config(apps, services));
}
