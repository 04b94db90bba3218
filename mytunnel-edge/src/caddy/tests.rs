use super::*;
use serde_json::json;

fn route() -> Route {
    Route {
        lease_id: "lease_aaaaaaaaaaaaaaaa".parse().unwrap(),
        host: "portal.t.example".parse().unwrap(),
        upstream: Upstream::LoopbackPort(21000),
    }
}

#[test]
fn queued_changes_apply_in_order_to_one_list() {
    let id = |n: &str| format!("mytunnel-lease_{n}");
    let route = |n: &str, port: u16| json!({"@id": id(n), "port": port});
    let catch_all = json!({"handle": [{"handler": "static_response"}]});
    let mut list = vec![
        route("a", 1),
        route("b", 2),
        route("a", 9), // a duplicate Caddy accepted
        catch_all.clone(),
    ];
    let changes = [
        Change::Upsert {
            id: id("a"),
            json: route("a", 3),
        },
        Change::Upsert {
            id: id("c"),
            json: route("c", 4),
        },
        Change::Remove { id: id("b") },
        Change::Remove { id: id("x") },
        Change::Upsert {
            id: id("c"),
            json: route("c", 5),
        },
    ];
    assert_eq!(
        apply_changes(&mut list, &changes),
        vec![true, false, true, false, true]
    );
    // New routes go first (ahead of the catch-all), changed ones stay in place, the
    // duplicate is gone.
    assert_eq!(list, vec![route("c", 5), route("a", 3), catch_all]);
}

#[test]
fn route_json_round_trips() {
    let json = route_json(&route());
    assert_eq!(json["@id"], "mytunnel-lease_aaaaaaaaaaaaaaaa");
    assert_eq!(json["handle"][0]["upstreams"][0]["dial"], "127.0.0.1:21000");
    let installed = parse_installed(&json).unwrap();
    assert_eq!(installed.route, Some(route()));
}

#[test]
fn foreign_and_malformed_routes() {
    assert_eq!(parse_installed(&json!({"handle": []})), None);
    assert_eq!(parse_installed(&json!({"@id": "other"})), None);
    let mut tampered = route_json(&route());
    tampered["handle"][0]["upstreams"][0]["dial"] = json!("10.0.0.1:80");
    let installed = parse_installed(&tampered).unwrap();
    assert_eq!(installed.id, "mytunnel-lease_aaaaaaaaaaaaaaaa");
    assert_eq!(installed.route, None);
    let mut extra = route_json(&route());
    extra["handle"][0]["extra"] = json!(1);
    assert_eq!(parse_installed(&extra).unwrap().route, None);
    assert_eq!(
        parse_installed(&json!({"@id": "mytunnel-x"}))
            .unwrap()
            .route,
        None
    );
}
