#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::inspect::Header;

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn each_place_keeps_its_own_headers_and_counts_what_does_not_fit() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 2,
        max_body_bytes: 4,
        max_head_bytes: 42,
    });
    let with_headers = |headers: Vec<Header>| NewExchange {
        request: RecordedRequest {
            headers,
            ..request(b"", 4)
        },
        ..new_exchange(b"", 4)
    };
    // The target `/hooks` takes 4 + 6 bytes, each header 8 + 1 + 1: three fit in 42,
    // the fourth is counted.
    let first = log.begin(with_headers(vec![
        header("a", "1"),
        header("b", "2"),
        header("c", "3"),
        header("d", "4"),
    ]));
    let kept = log.get(first).unwrap();
    assert_eq!(
        kept.request.headers,
        [header("a", "1"), header("b", "2"), header("c", "3")]
    );
    assert_eq!(kept.request.target, "/hooks");
    assert_eq!(kept.request.head_bytes_left_out, 2);
    let head = log.head(first).unwrap();
    assert!(head.request.headers.is_empty());
    assert_eq!(head.request.target, "/hooks", "lists show the target");

    log.update(first, |e| {
        e.response = Some(RecordedResponse {
            status: 200,
            headers: vec![header("x-app", "made")],
            head_bytes_left_out: 0,
            body: CapturedBody::default(),
        });
    });
    // A change that carries no headers keeps those kept.
    log.update(first, |e| e.state = ExchangeState::Complete);
    let kept = log.get(first).unwrap();
    assert_eq!(kept.request.headers.len(), 3);
    assert_eq!(kept.response.unwrap().headers, [header("x-app", "made")]);

    // The third takes the first's place: nothing of the first's headers stays.
    log.begin(with_headers(vec![]));
    let third = log.begin(with_headers(vec![header("z", "9")]));
    let kept = log.get(third).unwrap();
    assert_eq!(kept.request.headers, [header("z", "9")]);
    assert_eq!(kept.request.head_bytes_left_out, 0);
    assert!(kept.response.is_none());
    assert!(log.get(first).is_none());
}

#[test]
fn slots_in_blocks_of_several_keep_their_own_bytes() {
    // 2 MiB slots: two to a block, five places: blocks of two, two and one.
    let limits = ExchangeLimits {
        max_exchanges: 5,
        max_body_bytes: 1 << 20,
        max_head_bytes: 0,
    };
    let log = ExchangeLog::new(limits);
    let mut ids = Vec::new();
    for round in 0..8u8 {
        let id = log.begin(new_exchange(b"", 0));
        log.update(id, |e| {
            e.response = Some(RecordedResponse {
                status: 200,
                headers: vec![],
                head_bytes_left_out: 0,
                body: CapturedBody::default(),
            });
        });
        // The last byte of each body reaches the end of its slot.
        let request = vec![round; 1 << 20];
        let response = vec![round + 100; (1 << 20) + 10];
        log.append_body(id, BodySide::Request, &request);
        log.append_body(id, BodySide::Response, &response);
        ids.push((id, round));
    }
    assert_eq!(log.state().slots.blocks.len(), 3);
    for (id, round) in ids.iter().skip(3) {
        let kept = log.get(*id).unwrap();
        assert_eq!(kept.request.body.bytes, vec![*round; 1 << 20]);
        assert_eq!(kept.request.body.size, 1 << 20);
        let response = kept.response.unwrap();
        assert_eq!(response.body.bytes, vec![*round + 100; 1 << 20]);
        assert_eq!(response.body.size, (1 << 20) + 10);
        assert!(response.body.truncated());
    }
    assert_eq!(log.recent().len(), 5);
}

#[test]
fn the_bound_is_two_bodies_and_two_heads_per_exchange() {
    assert_eq!(
        ExchangeLimits::DEFAULT.bound_bytes(),
        100 * 2 * (64 + 16) * 1024
    );
    // Four blocks of 25 exchanges, each one page more.
    assert_eq!(
        ExchangeLimits::DEFAULT.footprint_bytes(),
        100 * 2 * (64 + 16) * 1024 + 4 * 4096
    );
    // Larger than a block: one per exchange; 3 bytes: one block.
    let big = ExchangeLimits {
        max_exchanges: 3,
        max_body_bytes: 3 << 20,
        max_head_bytes: 0,
    };
    assert_eq!(big.footprint_bytes(), 3 * ((6 << 20) + 4096));
    let tiny = ExchangeLimits {
        max_exchanges: 3,
        max_body_bytes: 1,
        max_head_bytes: 0,
    };
    assert_eq!(tiny.footprint_bytes(), 2 * 4096);
    let none = ExchangeLimits {
        max_exchanges: 0,
        max_body_bytes: 1,
        max_head_bytes: 2,
    };
    assert_eq!(none.bound_bytes(), 6, "0 exchanges keeps 1");
}

fn request(body: &[u8], cap: usize) -> RecordedRequest {
    let mut captured = CapturedBody::default();
    captured.push(body, cap);
    RecordedRequest {
        method: "POST".into(),
        target: "/hooks".into(),
        version: "HTTP/1.1".into(),
        headers: vec![],
        head_bytes_left_out: 0,
        body: captured,
    }
}

fn new_exchange(body: &[u8], cap: usize) -> NewExchange {
    NewExchange {
        host: "demo.example.com".into(),
        request: request(body, cap),
        upstream: AppLink::plain("127.0.0.1:3000".parse().unwrap()),
        replay_of: None,
    }
}

#[test]
fn a_body_keeps_its_first_bytes_and_counts_the_rest() {
    let mut body = CapturedBody::default();
    body.push(b"hello ", 8);
    body.push(b"world", 8);
    assert_eq!(body.bytes, b"hello wo");
    assert_eq!(body.size, 11);
    assert!(body.truncated());
    body.push(b"!", 8);
    assert_eq!(body.bytes, b"hello wo");
    assert_eq!(body.size, 12);
    // No more room than it keeps, however the chunks fall.
    let mut body = CapturedBody::default();
    for _ in 0..100 {
        body.push(&[b'x'; 1000], 65_536);
    }
    assert_eq!(body.bytes.len(), 65_536);
    assert_eq!(body.bytes.capacity(), 65_536);
}

#[test]
fn the_log_keeps_the_newest_exchanges_and_tells_readers() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 2,
        max_body_bytes: 4,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let mut changes = log.changes();
    let ids: Vec<ExchangeId> = (0..3)
        .map(|_| log.begin(new_exchange(b"abcdef", 4)))
        .collect();
    assert_eq!(ids, [ExchangeId(1), ExchangeId(2), ExchangeId(3)]);
    let kept: Vec<ExchangeId> = log.recent().iter().map(|e| e.id).collect();
    assert_eq!(kept, [ExchangeId(2), ExchangeId(3)]);
    assert!(log.get(ExchangeId(1)).is_none());
    assert_eq!(log.get(ExchangeId(3)).unwrap().request.body.bytes, b"abcd");
    for id in &ids {
        assert_eq!(changes.try_recv().unwrap(), *id);
    }
    // A dropped exchange changes nothing and tells nobody.
    assert_eq!(log.update(ExchangeId(1), |_| ()), None);
    assert!(changes.try_recv().is_err());
    log.update(ExchangeId(3), |e| e.state = ExchangeState::Complete)
        .unwrap();
    assert_eq!(changes.try_recv().unwrap(), ExchangeId(3));
}

/// The kept bytes live in a slot per place in the log: a new exchange in a place
/// sees nothing of the one before, an exchange pushed out cannot write into its old
/// place, and a change that does not touch a body keeps its bytes.
#[test]
fn each_place_in_the_log_keeps_its_own_bytes() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 2,
        max_body_bytes: 4,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let first = log.begin(new_exchange(b"aaaaaa", 4));
    let response = |bytes: &[u8]| RecordedResponse {
        status: 200,
        headers: vec![],
        head_bytes_left_out: 0,
        body: CapturedBody {
            bytes: bytes.to_vec(),
            size: bytes.len() as u64,
        },
    };
    log.update(first, |e| e.response = Some(response(b"AAAA")));
    log.update(first, |e| e.state = ExchangeState::Complete);
    let kept = log.get(first).unwrap();
    assert_eq!(kept.request.body.bytes, b"aaaa");
    assert_eq!(kept.response.unwrap().body.bytes, b"AAAA");

    let second = log.begin(new_exchange(b"bb", 4));
    // Takes the first one's place.
    let third = log.begin(new_exchange(b"", 4));
    assert!(log.get(first).is_none());
    let fresh = log.get(third).unwrap();
    assert_eq!(fresh.request.body.bytes, b"");
    assert_eq!(fresh.response, None);
    // The first one, still streaming somewhere, writes nothing any more.
    assert_eq!(
        log.update(first, |e| e.response = Some(response(b"XXXX"))),
        None
    );
    log.update(third, |e| e.response = Some(response(b"")));
    assert_eq!(log.get(third).unwrap().response.unwrap().body.bytes, b"");
    assert_eq!(log.get(second).unwrap().request.body.bytes, b"bb");
    // A body replaced by an empty one is empty.
    log.update(second, |e| e.request.body = CapturedBody::default());
    assert_eq!(log.get(second).unwrap().request.body.bytes, b"");
    assert_eq!(log.recent().len(), 2);
    // Heads, for lists: sizes without the bytes.
    let third_head = log.head(third).unwrap();
    assert_eq!(third_head.response.unwrap().body.size, 0);
    let heads = log.recent_heads();
    assert_eq!(heads.len(), 2);
    log.update(second, |e| {
        e.request.body = CapturedBody {
            bytes: b"cc".to_vec(),
            size: 2,
        };
    });
    let head = log.head(second).unwrap();
    assert_eq!(
        (head.request.body.bytes.len(), head.request.body.size),
        (0, 2)
    );
    assert_eq!(log.get(second).unwrap().request.body.bytes, b"cc");
}

#[test]
fn zero_exchanges_means_one() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 0,
        max_body_bytes: 0,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    log.begin(new_exchange(b"x", 0));
    assert_eq!(log.recent().len(), 1);
    assert_eq!(log.limits().max_exchanges, 1);
}

#[test]
fn a_summary_reads_as_a_log_line() {
    let log = ExchangeLog::new(ExchangeLimits::default());
    let id = log.begin(new_exchange(&[b'x'; 1500], 64));
    log.update(id, |e| {
        e.response = Some(RecordedResponse {
            status: 200,
            headers: vec![],
            head_bytes_left_out: 0,
            body: CapturedBody {
                bytes: vec![],
                size: 5_200_000,
            },
        });
        e.duration = Some(Duration::from_micros(3_140));
        e.state = ExchangeState::Complete;
    });
    let summary = log.get(id).unwrap().summary();
    assert_eq!(summary.to_string(), "POST /hooks 200 3.1ms 1.5 kB → 5.2 MB");
    log.update(id, |e| {
        e.state = ExchangeState::Upgraded;
        e.response.as_mut().unwrap().status = 101;
        e.duration = Some(Duration::from_millis(250));
    });
    assert_eq!(
        log.get(id).unwrap().summary().to_string(),
        "POST /hooks 101 250ms upgraded"
    );
    log.update(id, |e| {
        e.state = ExchangeState::Failed {
            reason: "the app closed the connection".into(),
        };
        e.response = None;
        e.replay_of = Some(ExchangeId(7));
    });
    assert_eq!(
        log.get(id).unwrap().summary().to_string(),
        "POST /hooks --- 250ms 1.5 kB → 0 B (replay of #7): the app closed the connection"
    );
}
