//! `mytunnel`: the client command. Its commands arrive with the client issue; today it
//! answers `--version` and says so for anything else.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-v") => println!("mytunnel {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: mytunnel <http|ls|stop|rm|doctor> [args]");
            eprintln!("note: this development build has no commands yet; they arrive in 0.1.0");
            std::process::exit(2);
        }
    }
}
