use super::*;
use serde_json::json;

fn route() -> Route {
    Route {
        lease_id: "lease_aaaaaaaaaaaaaaaa".parse().unwrap(),
        host: "portal.t.example".parse().unwrap(),
        upstream: Upstream::LoopbackPort(21000),
        forwarding: None,
    }
}

fn url(text: &str) -> mytunnel_core::EdgeUrl {
    text.parse().unwrap()
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

/// The two routes of several edges: this edge's own lease, falling back to the other
/// edges when its tunnel cannot be dialled, and another edge's lease, forwarded to it
/// unless another edge forwarded the request already. Both read back as written.
#[test]
fn forwarding_routes_round_trip() {
    let via: mytunnel_core::EdgeId = "edge-a".parse().unwrap();
    let own = Route {
        upstream: Upstream::UnixSocket("/run/mytunnel/hosts/portal.sock".parse().unwrap()),
        forwarding: Some(Forwarding {
            via: via.clone(),
            fallback: vec![
                url("https://edge-b.example.com"),
                url("https://edge-c.example.com:8443"),
            ],
        }),
        ..route()
    };
    let json = route_json(&own);
    assert_eq!(json["match"], json!([{"host": ["portal.t.example"]}]));
    let subroute = &json["handle"][0];
    assert_eq!(subroute["handler"], "subroute");
    assert_eq!(
        subroute["routes"][0]["handle"][0]["upstreams"],
        json!([{"dial": "unix//run/mytunnel/hosts/portal.sock"}])
    );
    let errors = &subroute["errors"]["routes"][0];
    assert_eq!(
        errors["match"],
        json!([{"header": {"X-Mytunnel-Via": null}}])
    );
    let fallback = &errors["handle"][0];
    assert_eq!(
        fallback["upstreams"],
        json!([{"dial": "edge-b.example.com:443"}, {"dial": "edge-c.example.com:8443"}])
    );
    assert_eq!(
        fallback["headers"]["request"]["set"]["X-Mytunnel-Via"],
        json!(["edge-a"])
    );
    assert_eq!(
        fallback["transport"]["tls"]["server_name"],
        "portal.t.example"
    );
    assert_eq!(
        fallback["load_balancing"]["selection_policy"]["policy"],
        "first"
    );
    assert_eq!(parse_installed(&json).unwrap().route, Some(own));

    let elsewhere = Route {
        upstream: Upstream::Edge(url("http://10.0.0.2:8080")),
        forwarding: Some(Forwarding {
            via,
            fallback: Vec::new(),
        }),
        ..route()
    };
    let json = route_json(&elsewhere);
    assert_eq!(
        json["match"],
        json!([{"host": ["portal.t.example"], "header": {"X-Mytunnel-Via": null}}])
    );
    assert_eq!(
        json["handle"][0]["upstreams"],
        json!([{"dial": "10.0.0.2:8080"}])
    );
    assert!(
        json["handle"][0].get("transport").is_none(),
        "http:// is plain"
    );
    assert!(json["handle"][0].get("load_balancing").is_none());
    assert_eq!(
        parse_installed(&json).unwrap().route,
        Some(elsewhere.clone())
    );

    // Anything else under the id is not ours as it stands: reconcile rewrites it.
    let mut tampered = route_json(&elsewhere);
    tampered["handle"][0]["headers"]["request"]["set"]["X-Mytunnel-Via"] = json!(["Not An Id"]);
    assert_eq!(parse_installed(&tampered).unwrap().route, None);
    let mut tampered = route_json(&elsewhere);
    tampered["match"][0]["header"]["X-Mytunnel-Via"] = json!([]);
    assert_eq!(parse_installed(&tampered).unwrap().route, None);
}
