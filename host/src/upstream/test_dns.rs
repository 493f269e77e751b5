//! A real DNS server for tests: authoritative for one zone, on 127.0.0.1 with
//! UDP and TCP on the same ephemeral port, answering from records a test can
//! change while it runs. The gateway's resolver talks to it over real sockets,
//! exactly as it would to a production nameserver.
//!
//! hickory-server's in-memory zone handler can only be changed through async
//! methods, and these setters are plain functions a test calls between steps,
//! so the zone is a map behind a `Mutex`, served by our own `RequestHandler`.
//!
//! Answers: the records of the asked name and type (NOERROR, authoritative);
//! a name with no records of that type, or the apex, gets NOERROR with the SOA
//! (NODATA); a name without any record gets NXDOMAIN with the SOA; a name
//! outside the zone gets REFUSED.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, LowerQuery, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// A DNS server on 127.0.0.1 for one zone. Dropping it stops it.
pub struct TestDns {
    /// 127.0.0.1 and a free port, the same for UDP and TCP.
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    /// Dropping the server aborts its tasks, which closes both sockets.
    _server: Server<Handler>,
}

impl fmt::Debug for TestDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).field("zone", &self.zone.origin).finish()
    }
}

impl TestDns {
    /// Starts a server authoritative for `zone` (e.g. "svc.test."), with no
    /// records yet.
    pub async fn start(zone: &str) -> Self {
        let origin = fqdn(zone);
        let soa = Record::from_rdata(
            origin.clone(),
            1,
            RData::SOA(SOA::new(fqdn("ns.invalid."), fqdn("hostmaster.invalid."), 1, 60, 60, 600, 1)),
        );
        let zone = Arc::new(Zone {
            origin: LowerName::new(&origin),
            soa,
            records: Mutex::new(HashMap::new()),
            queries: AtomicUsize::new(0),
            fail_aaaa: AtomicBool::new(false),
        });
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("UDP socket address");
        let mut server = Server::new(Handler(zone.clone()));
        server.register_socket(udp);
        // The resolver under test keeps its TCP connection only as long as it
        // needs; 10 s is well past any test's pause between queries.
        server.register_listener(tcp, Duration::from_secs(10), 32);
        Self { addr, zone, _server: server }
    }

    /// Replaces the A and AAAA records of `name` with `ips`. An empty `ips`
    /// removes them; a name left with no records answers NXDOMAIN.
    pub fn set_a(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let name = self.in_zone(name);
        let records = ips.iter().map(|ip| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(name.clone(), ttl, data)
        });
        self.zone.replace(&name, &[RecordType::A, RecordType::AAAA], records.collect());
    }

    /// Replaces the SRV records of `name` with `targets`, each
    /// (priority, weight, port, target). An empty `targets` removes them.
    pub fn set_srv(&self, name: &str, targets: &[(u16, u16, u16, &str)], ttl: u32) {
        let name = self.in_zone(name);
        let records = targets.iter().map(|&(priority, weight, port, target)| {
            Record::from_rdata(name.clone(), ttl, RData::SRV(SRV::new(priority, weight, port, fqdn(target))))
        });
        self.zone.replace(&name, &[RecordType::SRV], records.collect());
    }

    /// Answers every AAAA query SERVFAIL (`true`), as a resolver that
    /// fumbles IPv6 does, or normally again (`false`).
    pub fn fail_aaaa(&self, fail: bool) {
        self.zone.fail_aaaa.store(fail, Ordering::SeqCst);
    }

    /// How many queries it has answered, over UDP and TCP.
    pub fn queries(&self) -> usize {
        self.zone.queries.load(Ordering::SeqCst)
    }

    fn in_zone(&self, name: &str) -> Name {
        let name = fqdn(name);
        assert!(self.zone.origin.zone_of(&LowerName::new(&name)), "{name} is outside the zone {}", self.zone.origin);
        name
    }
}

/// A free port on 127.0.0.1 for both UDP and TCP. The OS picks the UDP port;
/// TCP may have that port taken by someone else, so a few are tried.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind(("127.0.0.1", 0)).await.expect("bind UDP on 127.0.0.1");
        let port = udp.local_addr().expect("UDP socket address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no port on 127.0.0.1 was free for both UDP and TCP");
}

fn fqdn(name: &str) -> Name {
    let mut name = Name::from_ascii(name).unwrap_or_else(|e| panic!("`{name}` is not a DNS name: {e}"));
    name.set_fqdn(true);
    name
}

struct Zone {
    origin: LowerName,
    soa: Record,
    records: Mutex<HashMap<LowerName, Vec<Record>>>,
    queries: AtomicUsize,
    fail_aaaa: AtomicBool,
}

impl Zone {
    fn replace(&self, name: &Name, types: &[RecordType], new: Vec<Record>) {
        let key = LowerName::new(name);
        // A test that panicked mid-update has failed already; the map itself
        // is still whole, so later reads may go on.
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let set = records.entry(key.clone()).or_default();
        set.retain(|r| !types.contains(&r.record_type()));
        set.extend(new);
        if set.is_empty() {
            records.remove(&key);
        }
    }

    /// Response code, answers and authority section for one query.
    fn answer(&self, query: &LowerQuery) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        let name = query.name();
        if query.query_type() == RecordType::AAAA && self.fail_aaaa.load(Ordering::SeqCst) {
            return (ResponseCode::ServFail, Vec::new(), Vec::new());
        }
        if !self.origin.zone_of(name) {
            return (ResponseCode::Refused, Vec::new(), Vec::new());
        }
        if *name == self.origin && query.query_type() == RecordType::SOA {
            return (ResponseCode::NoError, vec![self.soa.clone()], Vec::new());
        }
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        match records.get(name) {
            Some(set) => {
                let answers: Vec<Record> =
                    set.iter().filter(|r| r.record_type() == query.query_type()).cloned().collect();
                let authority = if answers.is_empty() { vec![self.soa.clone()] } else { Vec::new() };
                (ResponseCode::NoError, answers, authority)
            }
            None if *name == self.origin => (ResponseCode::NoError, Vec::new(), vec![self.soa.clone()]),
            None => (ResponseCode::NXDomain, Vec::new(), vec![self.soa.clone()]),
        }
    }
}

struct Handler(Arc<Zone>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        self.0.queries.fetch_add(1, Ordering::SeqCst);
        let (code, answers, authority) = match request.queries.queries() {
            [query] => self.0.answer(query),
            _ => (ResponseCode::FormErr, Vec::new(), Vec::new()),
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.response_code = code;
        // Answering with EDNS when asked lets UDP carry up to the client's
        // payload size; past it the answer is truncated and the client
        // retries over TCP, as with any real server.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let message = builder.build(metadata, answers.iter(), authority.iter(), [].iter(), [].iter());
        match response.send_response(message).await {
            Ok(info) => info,
            // The client went away (or the answer did not encode); hickory
            // only wants to know what was meant to be sent.
            Err(_) => {
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}
