//! `mytunneld`: the edge command. Its commands arrive with the edge issue; today it
//! answers `--version` and says so for anything else.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => println!("mytunneld {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: mytunneld <serve|ctl|gate> [args]");
            eprintln!("note: this development build has no commands yet; they arrive in 0.1.0");
            std::process::exit(2);
        }
    }
}
