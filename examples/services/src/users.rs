//! The users service: list, look up and create users.
//!
//! - `GET /users`: every user
//! - `GET /users/{id}`: one user, or 404
//! - `POST /users` with `{"name": "...", "email": "..."}`: 201 and the new user
//! - `GET /health`

use std::sync::{Mutex, PoisonError};

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::server::{Reply, Req, Service};

/// The store refuses new users beyond this, so the demo cannot be made to
/// grow without bound.
const MAX_USERS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
}

/// What a request can ask of the service.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    List,
    Get(u64),
    Create,
    NotFound,
    MethodNotAllowed(&'static str),
}

fn route(req: &Req) -> Route {
    let get = req.method == Method::GET;
    match req.segments().as_slice() {
        ["health"] if get => Route::Health,
        ["users"] if get => Route::List,
        ["users"] if req.method == Method::POST => Route::Create,
        ["users"] => Route::MethodNotAllowed("GET, POST"),
        ["users", id] => match id.parse() {
            Ok(id) if get => Route::Get(id),
            Ok(_) => Route::MethodNotAllowed("GET"),
            Err(_) => Route::NotFound,
        },
        ["health"] => Route::MethodNotAllowed("GET"),
        _ => Route::NotFound,
    }
}

/// The body of `POST /users`. Both fields are optional here so a missing
/// one gets its own message.
#[derive(Debug, Deserialize)]
struct NewUser {
    name: Option<String>,
    email: Option<String>,
}

/// Checks a `POST /users` body. Messages never repeat the body back.
fn parse_new_user(body: &[u8]) -> Result<(String, String), String> {
    let new: NewUser = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "expected a JSON object with string fields `name` and `email`".to_owned(),
        _ => "the body is not valid JSON".to_owned(),
    })?;
    let name = new.name.map(|n| n.trim().to_owned()).unwrap_or_default();
    let email = new.email.map(|e| e.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err("missing field `name`".to_owned());
    }
    if email.is_empty() {
        return Err("missing field `email`".to_owned());
    }
    if name.chars().count() > 100 {
        return Err("`name` is longer than 100 characters".to_owned());
    }
    let plausible = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if !plausible {
        return Err("`email` is not an email address".to_owned());
    }
    Ok((name, email))
}

/// The users, in memory.
#[derive(Debug)]
pub struct Users {
    users: Mutex<Vec<User>>,
}

impl Users {
    /// The same three users on every start.
    pub fn seeded() -> Self {
        let seed = [
            (1, "Ada Lovelace", "ada@example.com"),
            (2, "Alan Turing", "alan@example.com"),
            (3, "Grace Hopper", "grace@example.com"),
        ];
        let users = seed.map(|(id, name, email)| User { id, name: name.to_owned(), email: email.to_owned() });
        Self { users: Mutex::new(users.to_vec()) }
    }

    fn list(&self) -> Vec<User> {
        self.lock().clone()
    }

    fn get(&self, id: u64) -> Option<User> {
        self.lock().iter().find(|u| u.id == id).cloned()
    }

    fn create(&self, name: String, email: String) -> Option<User> {
        let mut users = self.lock();
        if users.len() >= MAX_USERS {
            return None;
        }
        let id = users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
        let user = User { id, name, email };
        users.push(user.clone());
        Some(user)
    }

    /// A panic elsewhere cannot leave the list half-written (every change is
    /// one push), so a poisoned lock is still safe to use.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<User>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service for Users {
    const NAME: &'static str = "users";

    fn handle(&self, req: &Req) -> Reply {
        match route(req) {
            Route::Health => Reply::health(Self::NAME),
            Route::List => {
                let users = self.list();
                Reply::ok(json!({ "count": users.len(), "users": users }))
            }
            Route::Get(id) => match self.get(id) {
                Some(user) => Reply::ok(json!(user)),
                None => Reply::error(StatusCode::NOT_FOUND, &format!("no user with id {id}")),
            },
            Route::Create => match parse_new_user(&req.body) {
                Ok((name, email)) => match self.create(name, email) {
                    Some(user) => Reply::created(json!(user)),
                    None => Reply::error(StatusCode::INSUFFICIENT_STORAGE, "the user store is full"),
                },
                Err(message) => Reply::error(StatusCode::BAD_REQUEST, &message),
            },
            Route::NotFound => Reply::not_found(),
            Route::MethodNotAllowed(allow) => Reply::method_not_allowed(allow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: &str) -> Req {
        Req { body: bytes::Bytes::from(body.to_owned()), ..Req::new(Method::POST, "/users") }
    }

    #[test]
    fn routes() {
        let r = |method: Method, path: &str| route(&Req::new(method, path));
        assert_eq!(r(Method::GET, "/health"), Route::Health);
        assert_eq!(r(Method::GET, "/users"), Route::List);
        assert_eq!(r(Method::GET, "/users/"), Route::List);
        assert_eq!(r(Method::GET, "/users/2"), Route::Get(2));
        assert_eq!(r(Method::POST, "/users"), Route::Create);
        assert_eq!(r(Method::DELETE, "/users"), Route::MethodNotAllowed("GET, POST"));
        assert_eq!(r(Method::DELETE, "/users/2"), Route::MethodNotAllowed("GET"));
        assert_eq!(r(Method::GET, "/users/ada"), Route::NotFound);
        assert_eq!(r(Method::GET, "/users/1/orders"), Route::NotFound);
        assert_eq!(r(Method::GET, "/"), Route::NotFound);
    }

    #[test]
    fn lookups() {
        let users = Users::seeded();
        assert_eq!(users.handle(&Req::new(Method::GET, "/users")).body["count"], 3);
        let one = users.handle(&Req::new(Method::GET, "/users/3"));
        assert_eq!(one.status, 200);
        assert_eq!(one.body["name"], "Grace Hopper");
        let missing = users.handle(&Req::new(Method::GET, "/users/42"));
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body["error"], "no user with id 42");
    }

    #[test]
    fn create_assigns_the_next_id() {
        let users = Users::seeded();
        let r = users.handle(&post(r#"{"name":" Edsger Dijkstra ","email":"edsger@example.com"}"#));
        assert_eq!(r.status, 201);
        assert_eq!(r.body, json!({ "id": 4, "name": "Edsger Dijkstra", "email": "edsger@example.com" }));
        assert_eq!(users.handle(&Req::new(Method::GET, "/users/4")).status, 200);
    }

    #[test]
    fn bad_bodies_are_400_without_echoing_them() {
        let users = Users::seeded();
        let error = |body: &str| {
            let r = users.handle(&post(body));
            assert_eq!(r.status, 400, "{body}");
            r.body["error"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(error("{not json"), "the body is not valid JSON");
        assert_eq!(error(""), "the body is not valid JSON");
        assert_eq!(error(r#"{"name":"x"}"#), "missing field `email`");
        assert_eq!(error(r#"{"email":"x@example.com"}"#), "missing field `name`");
        assert_eq!(error(r#"{"name":"x","email":"secret-token"}"#), "`email` is not an email address");
        assert!(!error(r#"{"name":"x","email":12345678}"#).contains("12345678"));
        assert!(!error(r#"["hunter2"]"#).contains("hunter2"));
        assert_eq!(users.list().len(), 3, "nothing was created");
    }

    #[test]
    fn the_store_is_bounded() {
        let users = Users::seeded();
        for i in 3..MAX_USERS {
            assert!(users.create(format!("u{i}"), "u@example.com".into()).is_some());
        }
        let r = users.handle(&post(r#"{"name":"one too many","email":"x@example.com"}"#));
        assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    }
}
