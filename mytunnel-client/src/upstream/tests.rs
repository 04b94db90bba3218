use super::*;
use proptest::prelude::*;

fn parsed(text: &str) -> Upstream {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
}

fn code(text: &str) -> &'static str {
    match text.parse::<Upstream>() {
        Ok(upstream) => panic!("{text:?} parsed as {upstream}"),
        Err(e) => e.code(),
    }
}

#[test]
fn each_form_parses_to_what_it_names() {
    let cases = [
        ("3000", "http://localhost:3000"),
        ("localhost:5173", "http://localhost:5173"),
        ("LOCALHOST:5173", "http://localhost:5173"),
        ("127.0.0.2:8080", "http://127.0.0.2:8080"),
        ("[::1]:18555", "http://[::1]:18555"),
        ("0.0.0.0:3000", "http://localhost:3000"),
        ("[::]:3000", "http://localhost:3000"),
        ("devbox.lan:80", "http://devbox.lan"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://localhost:3000/", "http://localhost:3000"),
        ("HTTPS://localhost:8443", "https://localhost:8443"),
        ("https://localhost", "https://localhost"),
        ("https://[::1]", "https://[::1]"),
        ("http://My-App.test.", "http://my-app.test"),
    ];
    for (text, shown) in cases {
        assert_eq!(parsed(text).to_string(), shown, "{text}");
    }
    let v6 = parsed("[::1]:18555");
    assert_eq!(
        v6.fixed_addresses(),
        Some(vec!["[::1]:18555".parse().unwrap()])
    );
    assert_eq!(v6.authority(), "[::1]:18555");
    assert_eq!(
        parsed("3000").fixed_addresses(),
        Some(vec![
            "127.0.0.1:3000".parse().unwrap(),
            "[::1]:3000".parse().unwrap()
        ])
    );
    assert_eq!(parsed("https://localhost:443").authority(), "localhost");
    assert_eq!(parsed("devbox.lan:81").fixed_addresses(), None);
}

#[test]
fn each_malformed_form_is_refused_with_its_code() {
    let cases = [
        ("", "target_empty"),
        ("0", "target_port"),
        ("65536", "target_port"),
        ("localhost:0", "target_port"),
        ("localhost:", "target_port"),
        ("localhost:+80", "target_port"),
        ("localhost:3000x", "target_port"),
        ("localhost", "target_no_port"),
        ("127.0.0.1", "target_no_port"),
        ("ftp://localhost:21", "target_scheme"),
        ("ws://localhost:3000", "target_scheme"),
        ("::1:3000", "target_host"),
        ("[::1:3000", "target_host"),
        ("[::1]3000", "target_host"),
        ("[nope]:3000", "target_host"),
        (":3000", "target_host"),
        ("bad host:3000", "target_host"),
        ("-x.test:3000", "target_host"),
        ("a..b:3000", "target_host"),
        ("user@localhost:3000", "target_host"),
        ("http://user:pw@localhost:3000", "target_host"),
        ("localhost:3000/app", "target_path"),
        ("http://localhost:3000/app", "target_path"),
        ("http://localhost:3000?x=1", "target_path"),
        ("http://localhost:3000/#top", "target_path"),
    ];
    for (text, expected) in cases {
        assert_eq!(code(text), expected, "{text:?}");
    }
    let long = format!("{}:3000", "a".repeat(400));
    assert_eq!(code(&long), "target_host");
    assert!(long.parse::<Upstream>().unwrap_err().to_string().len() < 200);
}

#[test]
fn host_headers_are_rewrite_or_a_host() {
    assert_eq!("rewrite".parse(), Ok(HostHeader::Rewrite));
    assert_eq!(
        "myapp.test:8080".parse(),
        Ok(HostHeader::Value("myapp.test:8080".into()))
    );
    for bad in ["", "a b", "x@y", "x/y", "host\r\nX-Evil: 1", "h:99999999"] {
        let e = bad.parse::<HostHeader>().unwrap_err();
        assert_eq!(e.code(), "host_header_invalid", "{bad:?}");
    }
}

proptest! {
    /// Nothing panics, and whatever parses prints as a target that parses to itself.
    #[test]
    fn any_text_parses_or_is_refused_and_round_trips(text in "\\PC{0,40}|[a-z0-9:\\[\\]./@-]{0,30}") {
        if let Ok(upstream) = text.parse::<Upstream>() {
            let again: Upstream = upstream.to_string().parse().unwrap();
            prop_assert_eq!(again, upstream);
        }
    }

    #[test]
    fn every_port_form_names_localhost(port in 1u16..) {
        let upstream: Upstream = port.to_string().parse().unwrap();
        prop_assert_eq!(upstream.host(), &UpstreamHost::Localhost);
        prop_assert_eq!(upstream.port(), port);
        prop_assert_eq!(upstream.authority(), format!("localhost:{port}"));
    }

    #[test]
    fn any_socket_address_round_trips(addr in any::<SocketAddr>()) {
        prop_assume!(addr.port() != 0 && !addr.ip().is_unspecified());
        let upstream = addr.into_upstream().unwrap();
        let again: Upstream = upstream.to_string().parse().unwrap();
        // A scope id and flow label are not part of a target.
        prop_assert_eq!(again.fixed_addresses(), Some(vec![SocketAddr::new(addr.ip(), addr.port())]));
    }
}
