//! The metrics HTTP server over smoltcp's loopback device, with real
//! smoltcp TCP clients: routes and status codes, the request-size bound,
//! the request deadline, a client that never reads, a flood of headers,
//! random bytes, and slot reuse after every kind of ending.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "test scaffolding: a failure is a test failure")]

mod support;

use rtedge_control::http::{HttpConfig, HttpServer, Parsed, Route, parse_head};
use smoltcp::iface::{Config as InterfaceConfig, Interface, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use support::Client;

const BODY: &[u8] = b"# HELP up x\n# TYPE up gauge\nup 1\n";

struct Harness {
    now_ms: u64,
    net_ms: i64,
    device: Loopback,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: HttpServer,
    clients: Vec<Client>,
    next_port: u16,
    /// Answer waiting `/metrics` requests at every step.
    provide: bool,
    body: Vec<u8>,
}

impl Harness {
    fn new(config: HttpConfig) -> Harness {
        let mut device = Loopback::new(Medium::Ip);
        let mut iface = Interface::new(InterfaceConfig::new(HardwareAddress::Ip), &mut device, Instant::from_millis(0));
        iface.update_ip_addrs(|addresses| addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());
        let server = HttpServer::new(config, &mut sockets).unwrap();
        Harness {
            now_ms: 0,
            net_ms: 0,
            device,
            iface,
            sockets,
            server,
            clients: Vec::new(),
            next_port: 40_000,
            provide: true,
            body: BODY.to_vec(),
        }
    }

    fn connect_with(&mut self, rx_bytes: usize) -> usize {
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rx_bytes]), tcp::SocketBuffer::new(vec![0; 128 * 1024]));
        socket.connect(self.iface.context(), (IpAddress::v4(127, 0, 0, 1), self.server.config().port), self.next_port).unwrap();
        self.next_port += 1;
        let handle = self.sockets.add(socket);
        self.clients.push(Client::new(handle));
        self.steps(5);
        self.clients.len() - 1
    }

    fn connect(&mut self) -> usize {
        self.connect_with(256 * 1024)
    }

    fn socket(&mut self, client: usize) -> &mut tcp::Socket<'static> {
        let handle = self.clients[client].handle;
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    fn send(&mut self, client: usize, bytes: &[u8]) {
        self.clients[client].outgoing.extend(bytes);
    }

    fn step(&mut self) {
        self.net_ms += 1;
        let instant = Instant::from_millis(self.net_ms);
        self.iface.poll(instant, &mut self.device, &mut self.sockets);
        for client in &mut self.clients {
            client.pump(&mut self.sockets);
        }
        self.server.poll(self.now_ms, &mut self.sockets);
        if self.provide && self.server.wants_body() {
            let body = self.body.clone();
            self.server.provide_body(self.now_ms, &mut self.sockets, &body);
        }
        self.iface.poll(instant, &mut self.device, &mut self.sockets);
    }

    fn steps(&mut self, count: usize) {
        for _ in 0..count {
            self.step();
        }
    }

    fn settle(&mut self) {
        self.steps(80);
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn reply(&mut self, client: usize) -> String {
        String::from_utf8_lossy(&self.clients[client].received).into_owned()
    }

    /// The server closed (FIN) or reset.
    fn closed_by_server(&mut self, client: usize) -> bool {
        matches!(self.socket(client).state(), tcp::State::CloseWait | tcp::State::Closed | tcp::State::LastAck | tcp::State::TimeWait)
    }

    /// One request on a fresh connection; the whole reply.
    fn exchange(&mut self, request: &[u8]) -> String {
        let client = self.connect();
        self.send(client, request);
        self.settle();
        let reply = self.reply(client);
        assert!(self.closed_by_server(client), "the server closes after the reply: {reply}");
        self.socket(client).close();
        self.settle();
        reply
    }
}

fn status(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

#[test]
fn get_metrics_is_200_with_the_exposition_content_type_and_the_body() {
    let mut harness = Harness::new(HttpConfig::DEFAULT);
    let reply = harness.exchange(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: */*\r\n\r\n");
    assert_eq!(
        reply,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            BODY.len(),
            String::from_utf8_lossy(BODY)
        )
    );
    // A query string, HTTP/1.0, bare LF line ends and the absolute form
    // name the same resource.
    for request in
        [&b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"[..], b"GET /metrics HTTP/1.1\n\n", b"GET http://127.0.0.1:9100/metrics HTTP/1.1\r\n\r\n"]
    {
        let reply = harness.exchange(request);
        assert_eq!(status(&reply), "HTTP/1.1 200 OK", "{}", String::from_utf8_lossy(request));
        assert!(reply.ends_with("up 1\n"));
    }
    let head = harness.exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(head.ends_with(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", BODY.len())), "{head}");
    assert_eq!(harness.server.stats().ok, 5);
}

#[test]
fn other_paths_are_404_other_methods_405_and_garbage_400() {
    let mut harness = Harness::new(HttpConfig::DEFAULT);
    assert_eq!(status(&harness.exchange(b"GET / HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
    assert_eq!(status(&harness.exchange(b"GET /metricsx HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
    let post = harness.exchange(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(status(&post), "HTTP/1.1 405 Method Not Allowed");
    assert!(post.contains("\r\nAllow: GET, HEAD\r\n"));
    for garbage in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"G(T /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /met\x01rics HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
    ] {
        assert_eq!(status(&harness.exchange(garbage)), "HTTP/1.1 400 Bad Request", "{}", String::from_utf8_lossy(garbage));
    }
    let stats = harness.server.stats();
    assert_eq!((stats.not_found, stats.method_not_allowed, stats.bad_request, stats.ok), (2, 1, 7, 0));
}

#[test]
fn a_bad_request_line_is_answered_before_the_headers_end() {
    assert_eq!(parse_head(b"BREW /pot HTCPCP/1.0\r\nHost: x\r\n"), Parsed::Complete(Route::BadRequest));
    assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
    assert_eq!(parse_head(b"GET /metr"), Parsed::Incomplete);
}

#[test]
fn sixty_four_kib_of_headers_get_431_and_the_slot_comes_back() {
    let config = HttpConfig { max_connections: 1, ..HttpConfig::DEFAULT };
    let mut harness = Harness::new(config);
    let client = harness.connect();
    let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while request.len() < 64 * 1024 {
        request.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    request.extend_from_slice(b"\r\n");
    harness.send(client, &request);
    harness.steps(400);
    let reply = harness.reply(client);
    assert_eq!(status(&reply), "HTTP/1.1 431 Request Header Fields Too Large", "{reply}");
    assert!(harness.clients[client].outgoing.is_empty(), "the rest of the flood was read and discarded");
    assert!(harness.closed_by_server(client));
    harness.socket(client).close();
    harness.settle();
    assert_eq!(harness.server.stats().too_large, 1);
    // The only slot serves the next client.
    assert_eq!(status(&harness.exchange(b"GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
}

#[test]
fn a_trickled_request_gets_408_at_the_deadline() {
    let config = HttpConfig { max_connections: 1, ..HttpConfig::DEFAULT };
    let mut harness = Harness::new(config);
    let client = harness.connect();
    // One byte per 100 ms of server time: 40 bytes (less than the head)
    // take 4 s, and the head would never end before the 5 s deadline.
    for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: yes yes yes".iter().take(40) {
        harness.send(client, &[*byte]);
        harness.steps(3);
        harness.advance(100);
        assert!(harness.reply(client).is_empty());
    }
    harness.advance(config.request_deadline_ms);
    harness.settle();
    assert_eq!(status(&harness.reply(client)), "HTTP/1.1 408 Request Timeout");
    assert!(harness.closed_by_server(client));
    harness.socket(client).close();
    harness.settle();
    assert_eq!(status(&harness.exchange(b"GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
}

#[test]
fn a_client_that_never_reads_is_reset_at_the_reply_deadline() {
    let config = HttpConfig { max_connections: 1, ..HttpConfig::DEFAULT };
    let mut harness = Harness::new(config);
    // 1 KiB receive window, a 200 KiB body: the reply cannot leave.
    harness.body = vec![b'#'; 200 * 1024];
    let client = harness.connect_with(1024);
    harness.clients[client].reading = false;
    harness.send(client, b"GET /metrics HTTP/1.1\r\n\r\n");
    harness.settle();
    assert_eq!(harness.server.busy(), 1);
    assert!(harness.server.next_timeout(harness.now_ms).is_some());
    harness.advance(config.reply_deadline_ms);
    harness.settle();
    assert_eq!(harness.server.stats().reply_timeouts, 1);
    assert_eq!(harness.socket(client).state(), tcp::State::Closed, "reset");
    harness.advance(config.close_linger_ms);
    harness.settle();
    assert_eq!(harness.server.busy(), 0);
    harness.body = BODY.to_vec();
    assert_eq!(status(&harness.exchange(b"GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
}

#[test]
fn a_body_not_provided_in_time_is_503_and_a_too_large_one_500() {
    let config = HttpConfig { max_body_bytes: 16, ..HttpConfig::DEFAULT };
    let mut harness = Harness::new(config);
    harness.provide = false;
    let client = harness.connect();
    harness.send(client, b"GET /metrics HTTP/1.1\r\n\r\n");
    harness.settle();
    assert!(harness.server.wants_body());
    assert_eq!(harness.server.next_timeout(harness.now_ms), Some(config.reply_deadline_ms));
    harness.advance(config.reply_deadline_ms);
    harness.settle();
    assert_eq!(status(&harness.reply(client)), "HTTP/1.1 503 Service Unavailable");
    harness.provide = true;
    assert_eq!(status(&harness.exchange(b"GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 500 Internal Server Error");
}

#[test]
fn every_slot_serves_and_one_more_client_is_refused_by_tcp() {
    let config = HttpConfig { max_connections: 2, ..HttpConfig::DEFAULT };
    let mut harness = Harness::new(config);
    harness.provide = false;
    let first = harness.connect();
    let second = harness.connect();
    harness.send(first, b"GET /metrics HTTP/1.1\r\n\r\n");
    harness.send(second, b"GET /metrics HTTP/1.1\r\n\r\n");
    harness.settle();
    let third = harness.connect();
    harness.settle();
    assert_eq!(harness.socket(third).state(), tcp::State::Closed, "no listening socket: reset");
    harness.provide = true;
    harness.settle();
    assert_eq!(status(&harness.reply(first)), "HTTP/1.1 200 OK");
    assert_eq!(status(&harness.reply(second)), "HTTP/1.1 200 OK");
}

#[test]
fn random_bytes_never_panic_and_every_connection_ends() {
    let config = HttpConfig { max_connections: 2, max_request_bytes: 256, ..HttpConfig::DEFAULT };
    let mut harness = Harness::new(config);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..40 {
        let client = harness.connect();
        let length = (next() % 600) as usize;
        let mut bytes: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        if round % 3 == 0 {
            // Printable soup with line ends, closer to a request.
            let alphabet = b"GET /metrics HTTP/1.1\r\n: ";
            bytes = bytes.iter().map(|byte| alphabet[*byte as usize % alphabet.len()]).collect();
        }
        harness.send(client, &bytes);
        harness.steps(20);
        harness.advance(config.request_deadline_ms + config.reply_deadline_ms);
        harness.settle();
        harness.socket(client).abort();
        harness.advance(config.close_linger_ms);
        harness.settle();
    }
    assert_eq!(harness.server.busy(), 0, "every slot listens again");
    assert_eq!(status(&harness.exchange(b"GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
}
