//! The cart service: what a user is about to buy.
//!
//! - `GET /carts/{user_id}`: the items with price and quantity, and the total
//! - `GET /health`

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{Reply, Req, Service, money};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: &'static str,
    pub name: &'static str,
    /// In cents.
    pub price: u64,
    pub quantity: u32,
}

impl Item {
    /// Price times quantity, in cents.
    pub fn subtotal(&self) -> u64 {
        self.price.saturating_mul(u64::from(self.quantity))
    }
}

/// The sum of the items' subtotals, in cents.
pub fn total(items: &[Item]) -> u64 {
    items.iter().map(Item::subtotal).fold(0, u64::saturating_add)
}

fn cart_json(user_id: u64, items: &[Item]) -> Value {
    let lines: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "sku": i.sku,
                "name": i.name,
                "price": money(i.price),
                "quantity": i.quantity,
                "subtotal": money(i.subtotal()),
            })
        })
        .collect();
    json!({ "user_id": user_id, "currency": "EUR", "items": lines, "total": money(total(items)) })
}

/// What a request can ask of the service.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    Cart(u64),
    NotFound,
    MethodNotAllowed,
}

fn route(req: &Req) -> Route {
    let route = match req.segments().as_slice() {
        ["health"] => Route::Health,
        ["carts", user] => match user.parse() {
            Ok(user) => Route::Cart(user),
            Err(_) => return Route::NotFound,
        },
        _ => return Route::NotFound,
    };
    if req.method == Method::GET { route } else { Route::MethodNotAllowed }
}

/// The carts, in memory and read-only.
#[derive(Debug)]
pub struct Carts {
    carts: Vec<(u64, Vec<Item>)>,
}

impl Carts {
    /// The same carts on every start: users 1 and 2 have items, user 3 an
    /// empty cart; other users have none.
    pub fn seeded() -> Self {
        let item = |sku, name, price, quantity| Item { sku, name, price, quantity };
        Self {
            carts: vec![
                (
                    1,
                    vec![
                        item("KB-01", "Mechanical keyboard", 8_999, 1),
                        item("CB-USB-C", "USB-C cable", 1_250, 3),
                        item("MUG-42", "Coffee mug", 899, 2),
                    ],
                ),
                (2, vec![item("BK-SICP", "Structure and Interpretation of Computer Programs", 4_500, 1)]),
                (3, vec![]),
            ],
        }
    }

    fn get(&self, user_id: u64) -> Option<&[Item]> {
        self.carts.iter().find(|(u, _)| *u == user_id).map(|(_, items)| items.as_slice())
    }
}

impl Service for Carts {
    const NAME: &'static str = "cart";

    fn handle(&self, req: &Req) -> Reply {
        match route(req) {
            Route::Health => Reply::health(Self::NAME),
            Route::Cart(user_id) => match self.get(user_id) {
                Some(items) => Reply::ok(cart_json(user_id, items)),
                None => Reply::error(StatusCode::NOT_FOUND, &format!("no cart for user {user_id}")),
            },
            Route::NotFound => Reply::not_found(),
            Route::MethodNotAllowed => Reply::method_not_allowed("GET"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |method: Method, path: &str| route(&Req::new(method, path));
        assert_eq!(r(Method::GET, "/health"), Route::Health);
        assert_eq!(r(Method::GET, "/carts/7"), Route::Cart(7));
        assert_eq!(r(Method::PUT, "/carts/7"), Route::MethodNotAllowed);
        assert_eq!(r(Method::GET, "/carts"), Route::NotFound);
        assert_eq!(r(Method::GET, "/carts/me"), Route::NotFound);
        assert_eq!(r(Method::GET, "/carts/1/items"), Route::NotFound);
    }

    #[test]
    fn totals() {
        let item = |price, quantity| Item { sku: "s", name: "n", price, quantity };
        assert_eq!(total(&[]), 0);
        assert_eq!(total(&[item(1_250, 3), item(899, 2)]), 5_548);
        assert_eq!(total(&[item(u64::MAX, 2), item(1, 1)]), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn replies() {
        let carts = Carts::seeded();
        let r = carts.handle(&Req::new(Method::GET, "/carts/1"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body["total"], "145.47");
        assert_eq!(
            r.body["items"][1],
            json!({"sku":"CB-USB-C","name":"USB-C cable","price":"12.50","quantity":3,"subtotal":"37.50"})
        );
        let empty = carts.handle(&Req::new(Method::GET, "/carts/3"));
        assert_eq!(
            (empty.body["total"].as_str(), empty.body["items"].as_array().map(Vec::len)),
            (Some("0.00"), Some(0))
        );
        let none = carts.handle(&Req::new(Method::GET, "/carts/9"));
        assert_eq!(none.status, 404);
        assert_eq!(none.body["error"], "no cart for user 9");
    }
}
