//! The orders service: a user's recent orders, and single orders.
//!
//! - `GET /orders?user={id}&limit={n}`: the user's orders, newest first, at
//!   most `limit` (1 to 50, default 5)
//! - `GET /orders/{id}`: one order, or 404
//! - `GET /health`

use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::server::{Reply, Req, Service, money};

const DEFAULT_LIMIT: usize = 5;
const MAX_LIMIT: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: u64,
    pub user_id: u64,
    /// RFC 3339 in UTC, so newer sorts later as text too.
    pub placed_at: &'static str,
    pub status: &'static str,
    pub items: u32,
    #[serde(serialize_with = "as_money")]
    pub total: u64,
}

fn as_money<S: serde::Serializer>(cents: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&money(*cents))
}

/// What a request can ask of the service.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    /// `GET /orders?...`: the query is checked by [`parse_query`].
    Recent,
    Get(u64),
    NotFound,
    MethodNotAllowed,
}

fn route(req: &Req) -> Route {
    let route = match req.segments().as_slice() {
        ["health"] => Route::Health,
        ["orders"] => Route::Recent,
        ["orders", id] => match id.parse() {
            Ok(id) => Route::Get(id),
            Err(_) => return Route::NotFound,
        },
        _ => return Route::NotFound,
    };
    if req.method == Method::GET { route } else { Route::MethodNotAllowed }
}

/// `user` (required) and `limit` (optional) from `GET /orders`.
fn parse_query(req: &Req) -> Result<(u64, usize), String> {
    let user = req
        .query_param("user")
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| "the query parameter `user` (a number) is required, e.g. ?user=1".to_owned())?;
    let limit = match req.query_param("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("`limit` must be a number from 1 to {MAX_LIMIT}"))?,
    };
    Ok((user, limit))
}

/// The orders, in memory and read-only.
#[derive(Debug)]
pub struct Orders {
    orders: Vec<Order>,
}

impl Orders {
    pub fn new(orders: Vec<Order>) -> Self {
        Self { orders }
    }

    /// The same orders on every start: eight for user 1 (more than one page
    /// at the default limit), two for user 2, none for user 3.
    pub fn seeded() -> Self {
        let seed = [
            (1001, 1, "2024-01-15T09:30:00Z", "delivered", 2, 4_598),
            (1002, 2, "2024-01-20T14:05:00Z", "delivered", 1, 1_299),
            (1003, 1, "2024-02-03T11:45:00Z", "delivered", 3, 8_750),
            (1004, 1, "2024-02-28T18:20:00Z", "returned", 1, 2_500),
            (1008, 1, "2024-05-30T10:00:00Z", "shipped", 1, 3_999),
            (1005, 1, "2024-03-12T08:10:00Z", "delivered", 5, 15_420),
            (1006, 2, "2024-04-01T16:40:00Z", "delivered", 2, 6_400),
            (1007, 1, "2024-04-22T19:55:00Z", "delivered", 1, 999),
            (1009, 1, "2024-06-02T07:25:00Z", "processing", 4, 11_230),
            (1010, 1, "2024-06-03T21:15:00Z", "processing", 2, 5_080),
        ];
        Self::new(
            seed.iter()
                .map(|&(id, user_id, placed_at, status, items, total)| Order {
                    id,
                    user_id,
                    placed_at,
                    status,
                    items,
                    total,
                })
                .collect(),
        )
    }

    /// A user's orders, newest first, at most `limit`.
    pub fn recent(&self, user_id: u64, limit: usize) -> Vec<&Order> {
        let mut mine: Vec<&Order> = self.orders.iter().filter(|o| o.user_id == user_id).collect();
        mine.sort_by(|a, b| b.placed_at.cmp(a.placed_at).then(b.id.cmp(&a.id)));
        mine.truncate(limit);
        mine
    }

    fn get(&self, id: u64) -> Option<&Order> {
        self.orders.iter().find(|o| o.id == id)
    }
}

impl Service for Orders {
    const NAME: &'static str = "orders";

    fn handle(&self, req: &Req) -> Reply {
        match route(req) {
            Route::Health => Reply::health(Self::NAME),
            Route::Recent => match parse_query(req) {
                Ok((user_id, limit)) => {
                    let orders = self.recent(user_id, limit);
                    Reply::ok(json!({ "user_id": user_id, "limit": limit, "count": orders.len(), "orders": orders }))
                }
                Err(message) => Reply::error(StatusCode::BAD_REQUEST, &message),
            },
            Route::Get(id) => match self.get(id) {
                Some(order) => Reply::ok(json!(order)),
                None => Reply::error(StatusCode::NOT_FOUND, &format!("no order with id {id}")),
            },
            Route::NotFound => Reply::not_found(),
            Route::MethodNotAllowed => Reply::method_not_allowed("GET"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(orders: &[&Order]) -> Vec<u64> {
        orders.iter().map(|o| o.id).collect()
    }

    #[test]
    fn routes() {
        let r = |method: Method, path: &str| route(&Req::new(method, path));
        assert_eq!(r(Method::GET, "/health"), Route::Health);
        assert_eq!(r(Method::GET, "/orders?user=1"), Route::Recent);
        assert_eq!(r(Method::GET, "/orders/1003"), Route::Get(1003));
        assert_eq!(r(Method::POST, "/orders"), Route::MethodNotAllowed);
        assert_eq!(r(Method::GET, "/orders/latest"), Route::NotFound);
        assert_eq!(r(Method::GET, "/users"), Route::NotFound);
    }

    #[test]
    fn recent_is_newest_first_and_limited() {
        let orders = Orders::seeded();
        assert_eq!(ids(&orders.recent(1, 5)), vec![1010, 1009, 1008, 1007, 1005]);
        assert_eq!(ids(&orders.recent(1, 50)), vec![1010, 1009, 1008, 1007, 1005, 1004, 1003, 1001]);
        assert_eq!(ids(&orders.recent(2, 5)), vec![1006, 1002]);
        assert!(orders.recent(3, 5).is_empty());
        assert_eq!(ids(&orders.recent(1, 1)), vec![1010]);
    }

    #[test]
    fn same_time_orders_fall_back_to_id() {
        let at = |id, placed_at| Order { id, user_id: 1, placed_at, status: "x", items: 1, total: 1 };
        let orders = Orders::new(vec![at(1, "2024-01-01T00:00:00Z"), at(3, "2024-01-01T00:00:00Z"), at(2, "2023")]);
        assert_eq!(ids(&orders.recent(1, 5)), vec![3, 1, 2]);
    }

    #[test]
    fn query_checks() {
        let q = |target: &str| parse_query(&Req::new(Method::GET, target));
        assert_eq!(q("/orders?user=2"), Ok((2, DEFAULT_LIMIT)));
        assert_eq!(q("/orders?limit=2&user=1"), Ok((1, 2)));
        assert!(q("/orders").is_err());
        assert!(q("/orders?user=ada").is_err());
        for bad in ["0", "51", "-1", "many", ""] {
            assert!(q(&format!("/orders?user=1&limit={bad}")).is_err(), "limit={bad}");
        }
    }

    #[test]
    fn replies() {
        let orders = Orders::seeded();
        let r = orders.handle(&Req::new(Method::GET, "/orders?user=1&limit=2"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body["count"], 2);
        assert_eq!(r.body["orders"][0]["total"], "50.80");
        assert_eq!(orders.handle(&Req::new(Method::GET, "/orders?user=x")).status, 400);
        assert_eq!(orders.handle(&Req::new(Method::GET, "/orders/1001")).body["user_id"], 1);
        assert_eq!(orders.handle(&Req::new(Method::GET, "/orders/999")).status, 404);
    }
}
