//! The entity model: one Cedar request and its entities per HTTP request.
//!
//! * principal — `User::"<sub>"` with the verified claims as attributes (and
//!   the `group_claim` values as parents), or `Anonymous::"anonymous"`;
//! * action — `Action::"GET"` or `Action::"<route>:GET"`, in its method's groups;
//! * resource — `Route::"<route>"` with `path` and the listed path captures;
//! * context — `ip`, `ip_text`, `time`, `hour`, `method`, `route`,
//!   `authenticated` and the listed `headers`.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use cedar_policy::{Context, Entities, Entity, EntityId, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};
use wasmgate_sdk::keys::{self, KeyMap};
use wasmgate_sdk::{ClientCertificate, Decimal, Headers, Request, clock};

use crate::Verdict;
use crate::config::{ActionId, Model};

/// A Cedar request with the entities it refers to.
#[derive(Debug)]
pub struct Built {
    pub request: cedar_policy::Request,
    pub set: Rc<EntitySet>,
}

impl Built {
    pub fn entities(&self) -> &Entities {
        &self.set.entities
    }
}

/// The three entities of one request, with their transitive closure
/// computed: everything but the context.
#[derive(Debug)]
pub struct EntitySet {
    entities: Entities,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    /// The verdict on these entities, when no policy that can apply reads
    /// the context (then the entities decide alone) and Cedar evaluated
    /// every policy without error (whose warnings are logged every time).
    pub verdict: OnceCell<Verdict>,
}

/// Why no Cedar request could be built: the request is denied with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The claims object in a context entry's text.
pub fn parse_claims(model: &Model, text: &str) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(claims)) => Ok(claims),
        Ok(_) => Err(Refusal(format!("the claims in `{}` are not a JSON object", model.claims_key))),
        Err(e) => Err(Refusal(format!("the claims in `{}` are not JSON: {e}", model.claims_key))),
    }
}

/// Values remembered by the exact text they are built from, bounded: at
/// most `max` entries, keys up to `max_key` bytes (longer ones are built
/// every time); when full it starts over. Only successes are remembered.
#[derive(Debug)]
pub struct Memo<V> {
    known: RefCell<KeyMap<V>>,
    /// With [`Memo::on_repeat`]: hashes of the keys seen once, so a value is
    /// kept only when its key comes back (one-off keys cost a hash, not an
    /// entry that crowds out the ones that repeat).
    seen: Option<RefCell<keys::HashSet>>,
    max: usize,
    max_key: usize,
}

impl<V: Clone> Memo<V> {
    /// Remembers every value it builds.
    pub fn new(max: usize, max_key: usize) -> Self {
        Self { known: RefCell::new(KeyMap::default()), seen: None, max, max_key }
    }

    /// Remembers a value the second time its key is asked for.
    pub fn on_repeat(max: usize, max_key: usize) -> Self {
        Self { seen: Some(RefCell::new(keys::HashSet::default())), ..Self::new(max, max_key) }
    }

    /// The value for `key`: remembered, or built by `build`.
    pub fn get_or_build(&self, key: &str, build: impl FnOnce() -> Result<V, Refusal>) -> Result<V, Refusal> {
        let key = key.as_bytes();
        let Ok(known) = self.known.try_borrow() else { return build() };
        let hash = known.hash(key);
        if let Some(value) = known.get_hashed(hash, key) {
            return Ok(value.clone());
        }
        drop(known);
        let value = build()?;
        if key.len() <= self.max_key
            && self.repeated(hash)
            && let Ok(mut known) = self.known.try_borrow_mut()
        {
            if known.len() >= self.max {
                known.clear();
            }
            known.insert(key, value.clone());
        }
        Ok(value)
    }

    /// Whether the key with `hash` may be remembered now: always, or (with
    /// [`Memo::on_repeat`]) when it was seen before.
    fn repeated(&self, hash: u64) -> bool {
        let Some(seen) = &self.seen else { return true };
        let Ok(mut seen) = seen.try_borrow_mut() else { return false };
        if seen.remove(&hash) {
            return true;
        }
        if seen.len() >= self.max * 4 {
            seen.clear();
        }
        seen.insert(hash);
        false
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.borrow().len()
    }

    #[cfg(test)]
    pub fn values(&self) -> Vec<V> {
        self.known.borrow().iter().map(|(_, v)| v.clone()).collect()
    }
}

/// Principal entities by claims text: one token's claims repeat, byte for
/// byte, on every request it makes, and the entity depends on nothing else,
/// so it is built once per token (parsing the claims and converting them
/// costs more than evaluating a few policies).
pub type Principals = Memo<Entity>;

/// Entity sets by [`set_key`]: a client repeating a request (same token,
/// route, method, path and captures) reuses its entities and their
/// transitive closure, the larger part of building a Cedar request — and,
/// when no policy reads the context, the verdict too. Kept from a key's
/// second request on ([`Memo::on_repeat`]). The context (clock, client
/// address, headers) is built for every request that needs it.
pub type EntitySets = Memo<Rc<EntitySet>>;

/// Principals remembered at most, and their claims texts' longest.
pub const MAX_PRINCIPALS: usize = 256;
pub const MAX_CLAIMS: usize = 4096;
/// Entity sets remembered at most, and their keys' longest.
pub const MAX_SETS: usize = 256;
pub const MAX_SET_KEY: usize = 8192;

/// Everything an [`EntitySet`] is built from, each part length-prefixed so
/// that no two different inputs share a key. `claims` is `None` for the
/// anonymous principal.
pub fn set_key(claims: Option<&str>, facts: &Facts) -> String {
    let mut key = String::with_capacity(
        claims.map_or(0, str::len) + facts.route.len() + facts.method.len() + facts.path.len() + 32,
    );
    // `c` and the claims, or `a` alone for the anonymous principal.
    key.push(if claims.is_some() { 'c' } else { 'a' });
    let mut part = |text: &str| {
        key.push_str(Decimal::new(text.len() as u64).as_str());
        key.push(':');
        key.push_str(text);
    };
    if let Some(claims) = claims {
        part(claims);
    }
    part(&facts.route);
    part(&facts.method);
    part(&facts.path);
    for (name, value) in &facts.params {
        part(name);
        part(value);
    }
    key
}

/// What the entity model reads from the HTTP request, gathered once: what
/// the entities are built from by [`Facts::gather`], what only the context
/// reads (client address, headers, clock) by [`Facts::gather_context`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub method: String,
    pub route: String,
    pub path: String,
    pub client_ip: String,
    /// The `resource_params` the route captured.
    pub params: Vec<(String, String)>,
    /// The `context_headers` present, repeated fields joined with `, `
    /// as HTTP combines them (RFC 9110 §5.3); values that are not UTF-8 are left out.
    pub headers: Vec<(String, String)>,
    pub now_unix_ms: u64,
    /// The certificate the client presented, when a policy reads it.
    pub client_cert: Option<ClientCertificate>,
}

impl Facts {
    pub fn gather(model: &Model, req: &Request<'_>) -> Self {
        let params =
            model.resource_params.iter().filter_map(|name| Some((name.clone(), req.path_param(name)?))).collect();
        Self { method: req.method(), route: req.route(), path: req.path(), params, ..Self::default() }
    }

    pub fn gather_context(&mut self, model: &Model, req: &Request<'_>) {
        self.headers = model
            .context_headers
            .iter()
            .filter_map(|name| {
                let values: Vec<String> =
                    req.header_all(name).into_iter().filter_map(|v| String::from_utf8(v).ok()).collect();
                (!values.is_empty()).then(|| (name.clone(), values.join(", ")))
            })
            .collect();
        self.client_ip = req.client_ip();
        self.now_unix_ms = clock::now_unix_ms();
        if model.context_client_cert {
            self.client_cert = req.client_certificate();
        }
    }
}

impl Model {
    /// The anonymous principal's entity.
    pub fn anonymous(&self) -> Entity {
        Entity::new_no_attrs(self.anonymous_uid.clone(), HashSet::new())
    }

    /// The Cedar request with `principal_entity` as the principal.
    #[cfg(test)]
    pub fn request_for(&self, facts: &Facts, principal_entity: Entity, authenticated: bool) -> Result<Built, Refusal> {
        self.request_with(Rc::new(self.entity_set(facts, principal_entity)?), facts, authenticated)
    }

    /// The principal, action and resource entities for `facts`.
    pub fn entity_set(&self, facts: &Facts, principal_entity: Entity) -> Result<EntitySet, Refusal> {
        let action = self.action(&facts.route, &facts.method);
        let resource = self.resource(facts)?;
        let (principal, action_uid, resource_uid) = (principal_entity.uid(), action.uid(), resource.uid());
        let entities = Entities::from_entities([principal_entity, action, resource], None)
            .map_err(|e| Refusal(format!("entities: {e}")))?;
        Ok(EntitySet { entities, principal, action: action_uid, resource: resource_uid, verdict: OnceCell::new() })
    }

    /// The Cedar request on `set`, with the context of `facts`.
    pub fn request_with(&self, set: Rc<EntitySet>, facts: &Facts, authenticated: bool) -> Result<Built, Refusal> {
        let context = context(facts, authenticated, self.context_ip)?;
        let request =
            cedar_policy::Request::new(set.principal.clone(), set.action.clone(), set.resource.clone(), context, None)
                .map_err(|e| Refusal(format!("request: {e}")))?;
        Ok(Built { request, set })
    }

    pub fn principal(&self, claims: &Map<String, Value>) -> Result<Entity, Refusal> {
        let id = match claims.get(&self.principal_id_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(Refusal(format!(
                    "the claims have no `{}` (a non-empty string or an integer) to name the principal",
                    self.principal_id_claim
                )));
            }
        };
        let uid = EntityUid::from_type_name_and_id(self.principal_type.clone(), EntityId::new(id));
        let attrs: HashMap<String, RestrictedExpression> =
            claims.iter().filter_map(|(k, v)| Some((k.clone(), to_cedar(v)?))).collect();
        let parents = match self.group_claim.as_ref().and_then(|g| claims.get(g)) {
            Some(Value::String(g)) => vec![g.as_str()],
            Some(Value::Array(gs)) => gs.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let parents = parents
            .into_iter()
            .map(|g| EntityUid::from_type_name_and_id(self.group_type.clone(), EntityId::new(g)))
            .collect();
        Entity::new(uid, attrs, parents).map_err(|e| Refusal(format!("principal: {e}")))
    }

    fn action(&self, route: &str, method: &str) -> Entity {
        Entity::new_no_attrs(self.action_uid(route, method), self.action_parents(method).iter().cloned().collect())
    }

    /// `Action::"GET"` or `Action::"<route>:GET"`.
    pub fn action_uid(&self, route: &str, method: &str) -> EntityUid {
        let id = match self.action {
            ActionId::Method => method.to_owned(),
            ActionId::RouteMethod => format!("{route}:{method}"),
        };
        EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(id))
    }

    /// The groups a method's action is in (the action's only ancestors).
    pub fn action_parents(&self, method: &str) -> &[EntityUid] {
        self.action_parents.get(method).map_or(&[], Vec::as_slice)
    }

    /// `Route::"<route>"`; it has no parents.
    pub fn resource_uid(&self, route: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.resource_type.clone(), EntityId::new(route))
    }

    fn resource(&self, facts: &Facts) -> Result<Entity, Refusal> {
        let uid = self.resource_uid(&facts.route);
        let mut attrs = HashMap::with_capacity(facts.params.len() + 1);
        attrs.insert("path".to_owned(), RestrictedExpression::new_string(facts.path.clone()));
        for (name, value) in &facts.params {
            attrs.insert(name.clone(), RestrictedExpression::new_string(value.clone()));
        }
        Entity::new(uid, attrs, HashSet::new()).map_err(|e| Refusal(format!("resource: {e}")))
    }
}

fn context(facts: &Facts, authenticated: bool, with_ip: bool) -> Result<Context, Refusal> {
    let secs = facts.now_unix_ms / 1000;
    let (ip_text, ip) = client_ip(&facts.client_ip);
    let headers = facts.headers.iter().map(|(n, v)| (n.clone(), RestrictedExpression::new_string(v.clone())));
    let headers = RestrictedExpression::new_record(headers).map_err(|e| Refusal(format!("context: {e}")))?;
    let mut pairs = vec![
        ("ip_text".to_owned(), RestrictedExpression::new_string(ip_text)),
        ("time".to_owned(), RestrictedExpression::new_long(i64::try_from(secs).unwrap_or(i64::MAX))),
        ("hour".to_owned(), RestrictedExpression::new_long(i64::try_from(secs % 86_400 / 3600).unwrap_or(0))),
        ("method".to_owned(), RestrictedExpression::new_string(facts.method.clone())),
        ("route".to_owned(), RestrictedExpression::new_string(facts.route.clone())),
        ("authenticated".to_owned(), RestrictedExpression::new_bool(authenticated)),
        ("headers".to_owned(), headers),
    ];
    if let Some(ip) = ip.filter(|_| with_ip) {
        pairs.push(("ip".to_owned(), RestrictedExpression::new_ip(ip)));
    }
    if let Some(cert) = &facts.client_cert {
        let strings =
            |list: &[String]| RestrictedExpression::new_set(list.iter().cloned().map(RestrictedExpression::new_string));
        let record = RestrictedExpression::new_record([
            ("subject".to_owned(), RestrictedExpression::new_string(cert.subject.clone())),
            ("hash".to_owned(), RestrictedExpression::new_string(cert.hash.clone())),
            ("uris".to_owned(), strings(&cert.uris)),
            ("dns_names".to_owned(), strings(&cert.dns_names)),
        ])
        .map_err(|e| Refusal(format!("context: {e}")))?;
        pairs.push(("client_cert".to_owned(), record));
    }
    Context::from_pairs(pairs).map_err(|e| Refusal(format!("context: {e}")))
}

/// The client address as text, and as text Cedar's `ip()` reads. An
/// IPv4-mapped IPv6 address (`::ffff:203.0.113.7`, from a dual-stack
/// listener) is given as IPv4: Cedar refuses IPv4 embedded in IPv6.
fn client_ip(text: &str) -> (String, Option<String>) {
    match text.parse::<std::net::IpAddr>() {
        Ok(addr) => {
            let canonical = addr.to_canonical().to_string();
            let readable = !(canonical.contains(':') && canonical.contains('.'));
            (canonical.clone(), readable.then_some(canonical))
        }
        Err(_) => (text.to_owned(), None),
    }
}

/// A claim as a Cedar value: strings, booleans, integers (and floats with
/// no fraction) as `Long`, arrays as sets, objects as records. `null`,
/// fractional and out-of-range numbers have no Cedar value and are left out
/// (of a record or set, too).
pub fn to_cedar(value: &Value) -> Option<RestrictedExpression> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => RestrictedExpression::new_long(integer(n)?),
        Value::Array(items) => RestrictedExpression::new_set(items.iter().filter_map(to_cedar)),
        Value::Object(fields) => {
            RestrictedExpression::new_record(fields.iter().filter_map(|(k, v)| Some((k.clone(), to_cedar(v)?)))).ok()?
        }
    })
}

fn integer(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // ±2^63 is exactly representable, so an integral float in this range
    // converts to i64 without saturating.
    let in_range = (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f);
    (in_range && f.fract() == 0.0).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn same(value: serde_json::Value, cedar: Option<&str>) {
        let expected = cedar.map(|c| RestrictedExpression::from_str(c).expect("valid Cedar"));
        assert_eq!(to_cedar(&value), expected, "{value}");
    }

    #[test]
    fn claims_become_cedar_values() {
        same(serde_json::json!("a"), Some(r#""a""#));
        same(serde_json::json!(true), Some("true"));
        same(serde_json::json!(-42), Some("-42"));
        same(serde_json::json!(1_700_000_000.0), Some("1700000000"));
        same(serde_json::json!(1.5), None);
        same(serde_json::json!(u64::MAX), None);
        same(serde_json::json!(null), None);
        same(serde_json::json!(["a", null, 1.5, 2]), Some(r#"["a", 2]"#));
        same(
            serde_json::json!({"org": {"id": "acme", "tier": null}, "tags": []}),
            Some(r#"{"org": {"id": "acme"}, "tags": []}"#),
        );
    }

    #[test]
    fn client_addresses_are_made_readable_for_cedar() {
        let ip = |t: &str| client_ip(t);
        assert_eq!(ip("203.0.113.7"), ("203.0.113.7".into(), Some("203.0.113.7".into())));
        assert_eq!(ip("::ffff:203.0.113.7"), ("203.0.113.7".into(), Some("203.0.113.7".into())));
        assert_eq!(ip("2001:db8::1"), ("2001:db8::1".into(), Some("2001:db8::1".into())));
        assert_eq!(ip("not an address"), ("not an address".into(), None));
        for text in ["203.0.113.7", "::ffff:10.1.2.3", "2001:db8::1", "::1"] {
            let (_, Some(readable)) = ip(text) else { panic!("{text} has no Cedar form") };
            let pairs = [("ip".to_owned(), RestrictedExpression::new_ip(&readable))];
            assert!(Context::from_pairs(pairs).is_ok(), "Cedar reads {readable}");
        }
    }
}
