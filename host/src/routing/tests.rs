use std::path::Path;

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::config;

fn config(routes: &str) -> Result<Config, config::ConfigError> {
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n{routes}");
    config::parse(Path::new("test.toml"), &text)
}

fn route_name(c: &Config, host: Option<&str>, method: Method, path: &str, headers: &HeaderMap) -> Option<String> {
    let router = Router::new(&c.routes);
    router.find(host, &method, path, headers).map(|m| c.routes[m.route].name.clone())
}

const TABLE: &str = r#"
[[routes]]
name = "catch-all"
upstream = "u"
[[routes]]
name = "api"
match = { prefix = "/api" }
upstream = "u"
[[routes]]
name = "users"
match = { path = "/api/users/{*rest}" }
upstream = "u"
[[routes]]
name = "user-by-id"
match = { path = "/api/users/{id}" }
upstream = "u"
[[routes]]
name = "me"
match = { path = "/api/users/me" }
upstream = "u"
[[routes]]
name = "users-post"
match = { path = "/api/users/{id}", methods = ["POST"] }
upstream = "u"
[[routes]]
name = "users-v2"
match = { path = "/api/users/{id}", headers = { "x-api-version" = "2" } }
upstream = "u"
[[routes]]
name = "admin-host"
match = { host = "admin.example.com", prefix = "/api" }
upstream = "u"
[[routes]]
name = "wild-host"
match = { host = "*.example.com", prefix = "/" }
upstream = "u"
"#;

#[test]
fn most_specific_route_wins() {
    let c = match config(TABLE) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let none = HeaderMap::new();
    let mut v2 = HeaderMap::new();
    v2.insert("x-api-version", HeaderValue::from_static("2"));
    let find = |host, method, path, h: &HeaderMap| route_name(&c, host, method, path, h);
    assert_eq!(find(None, Method::GET, "/", &none).as_deref(), Some("catch-all"));
    assert_eq!(find(None, Method::GET, "/api", &none).as_deref(), Some("api"));
    assert_eq!(find(None, Method::GET, "/api/orders", &none).as_deref(), Some("api"));
    assert_eq!(find(None, Method::GET, "/api/users", &none).as_deref(), Some("users"));
    assert_eq!(find(None, Method::GET, "/api/users/7/orders", &none).as_deref(), Some("users"));
    assert_eq!(find(None, Method::GET, "/api/users/7", &none).as_deref(), Some("user-by-id"));
    assert_eq!(find(None, Method::GET, "/api/users/me", &none).as_deref(), Some("me"));
    assert_eq!(find(None, Method::POST, "/api/users/7", &none).as_deref(), Some("users-post"));
    assert_eq!(find(None, Method::GET, "/api/users/7", &v2).as_deref(), Some("users-v2"));
    assert_eq!(find(Some("admin.example.com"), Method::GET, "/api/users/me", &none).as_deref(), Some("admin-host"));
    assert_eq!(find(Some("ADMIN.example.com"), Method::GET, "/api", &none).as_deref(), Some("admin-host"));
    assert_eq!(find(Some("shop.example.com"), Method::GET, "/api/users/me", &none).as_deref(), Some("wild-host"));
    assert_eq!(find(Some("example.com"), Method::GET, "/api/users/me", &none).as_deref(), Some("me"));
    // A wildcard needs a label before its suffix.
    assert_eq!(find(Some("..example.com"), Method::GET, "/api/users/me", &none).as_deref(), Some("me"));
    // A field sent twice matches no condition on it, whichever its values.
    let mut twice = HeaderMap::new();
    twice.append("x-api-version", HeaderValue::from_static("2"));
    twice.append("x-api-version", HeaderValue::from_static("1"));
    assert_eq!(find(None, Method::GET, "/api/users/7", &twice).as_deref(), Some("user-by-id"));
}

/// A rewrite is what the gateway sends: the rules for clients' paths
/// (`escaped_slashes`, `path_parameters`) are not its.
#[test]
fn a_rewrite_may_send_what_clients_may_not() {
    let routes = "[[routes]]\nmatch = { path = \"/p/{rest}\" }\nupstream = \"u\"\nrewrite = \"/api/v4/projects/grp%2Fproj;v=2/{rest}\"\n";
    assert!(config(routes).is_ok(), "{:?}", config(routes).err().map(|e| e.to_string()));
    let dots = "[[routes]]\nmatch = { path = \"/p/{rest}\" }\nupstream = \"u\"\nrewrite = \"/a/../{rest}\"\n";
    assert!(config(dots).is_err());
}

#[test]
fn header_conditions_on_host_or_padded_values_are_refused() {
    let err = |routes: &str| config(routes).err().map(|e| e.to_string()).unwrap_or_default();
    let host = err("[[routes]]\nmatch = { headers = { host = \"admin.example.com\" } }\nupstream = \"u\"\n");
    assert!(host.contains("routes[0].match.headers.host") && host.contains("match.host"), "{host}");
    let padded = err("[[routes]]\nmatch = { headers = { \"x-v\" = \" 2\" } }\nupstream = \"u\"\n");
    assert!(padded.contains("white space"), "{padded}");
}

#[test]
fn no_route_is_none() {
    let c = config("[[routes]]\nmatch = { path = \"/only\" }\nupstream = \"u\"\n");
    let c = match c {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(route_name(&c, None, Method::GET, "/other", &HeaderMap::new()), None);
}

#[test]
fn ties_are_refused() {
    let tie = r#"
[[routes]]
name = "a"
match = { path = "/users/{id}" }
upstream = "u"
[[routes]]
name = "b"
match = { path = "/users/{name}" }
upstream = "u"
"#;
    let err = config(tie).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("route `b` ties with route `a`"), "{err}");

    // Same rank but different literals, or disjoint header values: no tie.
    let fine = r#"
[[routes]]
match = { path = "/users/{id}" }
upstream = "u"
[[routes]]
match = { path = "/orders/{id}" }
upstream = "u"
[[routes]]
match = { path = "/v/{id}", headers = { "x-v" = "1" } }
upstream = "u"
[[routes]]
match = { path = "/v/{id}", headers = { "x-v" = "2" } }
upstream = "u"
"#;
    assert!(config(fine).is_ok());
}

#[test]
fn hosts_are_matched_without_their_port() {
    assert_eq!(host_name("example.com:8080"), Some("example.com"));
    assert_eq!(host_name("[::1]:80"), Some("::1"));
    assert_eq!(host_name("example.com"), Some("example.com"));
    assert_eq!(host_name("admin.example.com.:443"), Some("admin.example.com"), "the root's dot left out");
    assert_eq!(host_name("admin.example.com."), Some("admin.example.com"));
    assert_eq!(host_name("[::1]"), Some("::1"));
    assert_eq!(host_name("example.com:"), Some("example.com"));
    assert_eq!(host_name("[fe80::1%25eth0]"), Some("fe80::1%25eth0"));
    assert_eq!(host_name(""), Some(""));
    assert_eq!(host_name("a-b_c~d!$&'()*+,;=%41"), Some("a-b_c~d!$&'()*+,;=%41"));
}

#[test]
fn hosts_that_are_not_a_name_or_address_and_a_port_are_refused() {
    for bad in [
        "evil.test#.example.com",
        "evil.test/.example.com",
        "user@example.com",
        "a b",
        "example.com:80a",
        "example.com:80:80",
        "[::1",
        "[]",
        // Brackets hold an IP address, not a name.
        "[admin.example.com]",
        "[1.2.3.4]",
        "[fe80::1%25]",
        "[v1.]",
        "[v1.fe80::a+en1]:80",
        "[v1.admin.example.com]",
        "[::1]x",
        "[::1]:8x",
        "exa\\mple.com",
        "ex\"ample",
        "h?q",
        "é.example",
    ] {
        assert_eq!(host_name(bad), None, "{bad}");
    }
}

#[test]
fn the_host_comes_from_the_authority_before_the_host_header() {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static("api.test:8443"));
    let origin_form: http::Uri = "/a?b=1".parse().unwrap();
    let source = HostSource::of(&origin_form, &headers).unwrap();
    assert_eq!(source.as_named().and_then(host_name), Some("api.test"));
    assert_eq!(source.as_named(), Some("api.test:8443"));
    let absolute: http::Uri = "https://[2001:db8::1]:443/a".parse().unwrap();
    assert_eq!(HostSource::of(&absolute, &headers).unwrap().as_named().and_then(host_name), Some("2001:db8::1"));
    assert_eq!(HostSource::of(&absolute, &headers).unwrap().as_named(), Some("[2001:db8::1]:443"));
    let with_user: http::Uri = "http://user@api.test:8080/a".parse().unwrap();
    assert_eq!(HostSource::of(&with_user, &headers).unwrap().as_named(), Some("api.test:8080"));
    assert_eq!(HostSource::of(&with_user, &headers).unwrap().as_named().and_then(host_name), Some("api.test"));
    assert!(HostSource::of(&origin_form, &HeaderMap::new()).is_none());
    headers.insert(http::header::HOST, HeaderValue::from_bytes(b"caf\xc3\xa9.test").unwrap());
    assert_eq!(HostSource::of(&origin_form, &headers).unwrap().as_named().and_then(host_name), None, "not text");
}

#[test]
fn routes_starting_with_a_capture_are_found_from_every_bucket() {
    let c = config(
        r#"
[[routes]]
name = "tenant"
match = { path = "/{tenant}/users" }
upstream = "u"
[[routes]]
name = "api"
match = { prefix = "/api" }
upstream = "u"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let h = HeaderMap::new();
    assert_eq!(route_name(&c, None, Method::GET, "/acme/users", &h).as_deref(), Some("tenant"));
    assert_eq!(route_name(&c, None, Method::GET, "/api/users", &h).as_deref(), Some("api"));
    assert_eq!(route_name(&c, None, Method::GET, "/api", &h).as_deref(), Some("api"));
    assert_eq!(route_name(&c, None, Method::GET, "/acme/orders", &h), None);
}
