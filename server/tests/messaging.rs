//! Instant messages (issue 5, RFC 3428) over real sockets: forking to every binding, delivery
//! over the registered connection, the best final response, and each refusal.

#![allow(clippy::unwrap_used)] // a test fails loudly where a value is missing

mod common;

use common::*;
use sipfront_proto::{HeaderName, Message, Method};
use std::time::Duration;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

#[tokio::test(flavor = "multi_thread")]
async fn a_message_forks_to_every_binding_and_the_2xx_wins() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let (mut phone, mut laptop, mut bob) = (s.udp_client().await, s.udp_client().await, s.udp_client().await);
    register(&mut phone, "alice", "wonderland", None).await;
    register(&mut laptop, "alice", "wonderland", None).await;
    assert_eq!(s.bindings_of("alice").len(), 2);

    let msg = Request::message(&bob, "bob", "alice").set("Max-Forwards", "70");
    let (resp, on_phone, on_laptop) = tokio::join!(
        with_credentials(&mut bob, &msg, "bob", "builder"),
        answer_next(&phone, 486),
        answer_next(&laptop, 200)
    );
    assert_eq!(resp.status(), Some(200), "RFC 3261 16.7: a 2xx from any branch is what the sender gets");
    assert!(header(&resp, HeaderName::To).contains("tag=uas200"), "the 2xx itself, relayed");
    assert_eq!(resp.vias().count(), 1, "our Via is gone from the relayed response");

    for (fork, endpoint) in [(&on_phone, &phone), (&on_laptop, &laptop)] {
        assert_eq!(fork.method(), Some(&Method::Message));
        let uri = String::from_utf8_lossy(fork.request_uri().unwrap_or_default()).into_owned();
        assert_eq!(uri, format!("sip:alice@{}", endpoint.local()), "Request-URI is the binding's contact");
        assert_eq!(fork.body(), b"hello", "the body is relayed unchanged");
        assert_eq!(fork.max_forwards(), Some(69), "one hop less");
        assert_eq!(fork.vias().count(), 2, "our Via on top of the sender's");
        assert!(fork.header(HeaderName::ProxyAuthorization).is_none(), "our credentials are not passed on");
    }
    assert!(s.metric("sipfront_messages_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_tcp_and_tls_endpoints_mixed_each_get_the_message_over_their_own_flow() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut on_tls = Phone::tls(&s).await;
    let mut on_udp = Phone::udp(&s).await;
    let mut bob = Phone::tcp(&s).await;
    // Contacts where nothing listens, as Linphone registers over streams: only the flow works.
    register(&mut on_tls, "alice", "wonderland", Some("<sip:alice@127.0.0.1:9;transport=tls>")).await;
    register(&mut on_udp, "alice", "wonderland", None).await;
    register(&mut bob, "bob", "builder", None).await;

    // Bob's MESSAGE over the TCP connection he registered on: no challenge needed.
    let msg = Request::message(&bob, "bob", "alice");
    bob.send(&msg.to_bytes()).await;
    let got_tls = on_tls.expect_request(Method::Message).await;
    let got_udp = on_udp.expect_request(Method::Message).await;
    for got in [&got_tls, &got_udp] {
        assert_eq!(got.body(), b"hello");
        assert_eq!(got.vias().count(), 2);
    }
    assert!(header(&got_tls, HeaderName::Via).starts_with("SIP/2.0/TLS"), "our Via names TLS on that branch");
    on_tls.answer(&got_tls, 486, "t").await;
    on_udp.answer(&got_udp, 200, "u").await;
    let resp = bob.expect_response(200).await;
    assert!(header(&resp, HeaderName::To).contains("tag=u"), "the 2xx wins");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_2xx_the_best_failure_wins() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let (mut a1, mut a2, mut bob) = (s.udp_client().await, s.udp_client().await, s.udp_client().await);
    register(&mut a1, "alice", "wonderland", None).await;
    register(&mut a2, "alice", "wonderland", None).await;
    let msg = Request::message(&bob, "bob", "alice");
    let (resp, _, _) =
        tokio::join!(with_credentials(&mut bob, &msg, "bob", "builder"), answer_next(&a1, 503), answer_next(&a2, 486));
    assert_eq!(resp.status(), Some(486), "RFC 3261 16.7 step 6: a 4xx beats a 5xx");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_client_gets_its_messages_over_the_connection_it_registered_on() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut alice = s.tcp_client().await;
    // Like Linphone over TCP: a Contact port where nothing listens.
    register(&mut alice, "alice", "wonderland", Some("<sip:alice@127.0.0.1:9;transport=tcp>")).await;
    let mut bob = s.udp_client().await;
    let msg = Request::message(&bob, "bob", "alice");
    let deliver = async {
        let frame = alice.next_frame(Duration::from_secs(5)).await.expect("the MESSAGE on Alice's connection");
        let sipfront_proto::Frame::Message(bytes) = frame else { panic!("a message frame, got {frame:?}") };
        let m = parse(&bytes);
        assert_eq!(m.method(), Some(&Method::Message));
        let mut r = m.response_to(200);
        r.set_to_tag("tcp");
        r.ensure_content_length();
        alice.write(&r.to_bytes()).await;
    };
    let (resp, ()) = tokio::join!(with_credentials(&mut bob, &msg, "bob", "builder"), deliver);
    assert_eq!(resp.status(), Some(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| {
        c.messaging.max_body = 100;
        c.messaging.offline = false;
    })
    .await;
    let mut bob = s.udp_client().await;
    let mut alice = s.udp_client().await;

    let to_nobody = Request::message(&bob, "bob", "nobody");
    assert_eq!(with_credentials(&mut bob, &to_nobody, "bob", "builder").await.status(), Some(404), "unknown user");

    let offline = Request::message(&bob, "bob", "alice");
    assert_eq!(
        with_credentials(&mut bob, &offline, "bob", "builder").await.status(),
        Some(480),
        "no binding, offline storage off"
    );

    register(&mut alice, "alice", "wonderland", None).await;
    let mut big = Request::message(&bob, "bob", "alice");
    big.body = "x".repeat(101);
    assert_eq!(
        with_credentials(&mut bob, &big, "bob", "builder").await.status(),
        Some(413),
        "body over messaging.max_body"
    );

    let odd = Request::message(&bob, "bob", "alice").set("Content-Type", "application/x-unknown");
    let r = with_credentials(&mut bob, &odd, "bob", "builder").await;
    assert_eq!(r.status(), Some(415), "RFC 3428 7: unsupported type");
    assert!(header(&r, HeaderName::Accept).contains("text/plain"), "415 says what is accepted");

    let mut empty = Request::message(&bob, "bob", "alice");
    empty.body = String::new();
    assert_eq!(with_credentials(&mut bob, &empty, "bob", "builder").await.status(), Some(400), "no body");

    let hops = Request::message(&bob, "bob", "alice").set("Max-Forwards", "0");
    assert_eq!(with_credentials(&mut bob, &hops, "bob", "builder").await.status(), Some(483), "no hops left");
    // Nothing of the refused ones reached Alice.
    assert!(alice.recv(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_that_never_answers_gets_the_sender_a_408() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.transaction.t1_ms = 20).await;
    let (mut alice, mut bob) = (s.udp_client().await, s.udp_client().await);
    register(&mut alice, "alice", "wonderland", None).await;
    let msg = Request::message(&bob, "bob", "alice");
    // Alice stays silent: the branch times out after 64*T1 and the sender hears 408.
    let resp = with_credentials(&mut bob, &msg, "bob", "builder").await;
    assert_eq!(resp.status(), Some(408));
    assert_eq!(s.server.transactions.client_count(), 0, "the branch is cleaned up");
}

/// Receives the next MESSAGE on `client` and answers it 200.
async fn accept_next(client: &UdpClient) -> Message {
    answer_next(client, 200).await
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_for_an_absent_user_are_kept_and_delivered_in_order_at_the_next_register() {
    for backend in backends("offline_delivery").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let mut bob = s.udp_client().await;
        for text in ["first", "second"] {
            let mut msg = Request::message(&bob, "bob", "alice");
            msg.body = text.into();
            let r = with_credentials(&mut bob, &msg, "bob", "builder").await;
            assert_eq!(r.status(), Some(202), "kept while Alice is away, on {backend:?}");
        }
        let store = s.server.directory.store().clone();
        assert_eq!(store.offline_messages("alice@example.test", 10).await.unwrap().len(), 2);

        let mut alice = s.udp_client().await;
        register(&mut alice, "alice", "wonderland", None).await;
        let (one, two) = (accept_next(&alice).await, accept_next(&alice).await);
        assert_eq!((one.body(), two.body()), (&b"first"[..], &b"second"[..]), "in the order they came");
        assert!(header(&one, HeaderName::From).contains("sip:bob@example.test"), "from the original sender");
        assert!(
            header(&one, HeaderName::Date).ends_with(" GMT"),
            "dated when it was received: {}",
            header(&one, HeaderName::Date)
        );
        let gone = eventually(Duration::from_secs(5), async || {
            store.offline_messages("alice@example.test", 10).await.unwrap().is_empty()
        })
        .await;
        assert!(gone, "deleted once a 2xx came back, on {backend:?}");
        assert!(s.metric("sipfront_offline_messages_total").await >= 4.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_messages_survive_a_restart() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut bob = s.udp_client().await;
    let msg = Request::message(&bob, "bob", "alice");
    let r = with_credentials(&mut bob, &msg, "bob", "builder").await;
    assert_eq!(r.status(), Some(202));
    let TestServer { server, config, dir } = s;
    server.shutdown().await;

    let server = sipfront::start(&config, dir.path()).await.expect("the server starts again on the same data");
    let s = TestServer { server, config, dir };
    let mut alice = s.udp_client().await;
    register(&mut alice, "alice", "wonderland", None).await;
    let delivered = accept_next(&alice).await;
    assert_eq!(delivered.body(), b"hello", "the message kept before the restart");
}

/// Another front end on the same store keeps a message for Alice while she is registered here
/// (she had no binding there): her next REGISTER here delivers it, the change log having told
/// this front end that she has messages waiting. Refreshes of users with nothing waiting do not
/// look in the store (that is what the server's benchmark sees, not what this test can).
#[tokio::test(flavor = "multi_thread")]
async fn a_message_kept_by_another_front_end_goes_out_at_the_next_refresh() {
    for backend in backends("offline_other_front_end").await {
        let s = TestServer::with_users(&backend, USERS, |_| {}).await;
        let mut alice = s.udp_client().await;
        register(&mut alice, "alice", "wonderland", None).await;
        register(&mut alice, "alice", "wonderland", None).await;
        let elsewhere = sipfront_storage::open(&s.config.database.url, s.dir.path()).await.expect("the shared store");
        let waiting = s.server.directory.waiting();
        let kept = elsewhere.store_offline("alice@example.test", "bob@example.test", "text/plain", b"from afar", 10);
        assert!(kept.await.unwrap(), "{backend:?}");
        until_named(waiting, "alice@example.test").await;
        register(&mut alice, "alice", "wonderland", None).await;
        let delivered = accept_next(&alice).await;
        assert_eq!(delivered.body(), b"from afar", "{backend:?}");
        let gone = eventually(Duration::from_secs(5), async || {
            elsewhere.offline_messages("alice@example.test", 10).await.unwrap().is_empty()
        })
        .await;
        assert!(gone, "deleted once delivered, on {backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_offline_quota_is_kept() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |c| c.messaging.offline_max_per_user = 2).await;
    let mut bob = s.udp_client().await;
    for expected in [202, 202, 480] {
        let msg = Request::message(&bob, "bob", "alice");
        let r = with_credentials(&mut bob, &msg, "bob", "builder").await;
        assert_eq!(r.status(), Some(expected));
    }
}

/// RFC 5627: a request addressed to a GRUU reaches only the instance it names, whether the
/// public one (the AOR with `gr=` the instance) or a temporary one handed out at registration.
#[tokio::test(flavor = "multi_thread")]
async fn a_gruu_reaches_only_its_instance() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let (mut phone, mut laptop, mut bob) = (s.udp_client().await, s.udp_client().await, s.udp_client().await);
    let mut gruus = Vec::new();
    for (client, uuid) in
        [(&mut phone, "00000000-0000-1000-8000-00000000a001"), (&mut laptop, "00000000-0000-1000-8000-00000000a002")]
    {
        let contact = format!("<sip:alice@{}>;+sip.instance=\"<urn:uuid:{uuid}>\"", client.local());
        let req =
            Request::register(client, "alice").set("Expires", "300").set("Supported", "gruu").set("Contact", &contact);
        let r = with_credentials(client, &req, "alice", "wonderland").await;
        assert_eq!(r.status(), Some(200));
        // The 200 lists every binding of the AOR: take this client's.
        let own = format!("<sip:alice@{}>", client.local());
        let c =
            headers(&r, HeaderName::Contact).into_iter().find(|c| c.starts_with(&own)).expect("this client's binding");
        let param = |name: &str| {
            let start = c.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("{name} in {c}")) + name.len() + 2;
            c[start..].split('"').next().unwrap_or_default().to_string()
        };
        gruus.push((param("pub-gruu"), param("temp-gruu")));
    }
    let (laptop_pub, _) = &gruus[1];
    let (_, phone_temp) = &gruus[0];
    for (gruu, to, silent) in [(laptop_pub, &laptop, &phone), (phone_temp, &phone, &laptop)] {
        let mut msg = Request::message(&bob, "bob", "alice");
        msg.start_line = format!("MESSAGE {gruu} SIP/2.0");
        let (r, got) = tokio::join!(with_credentials(&mut bob, &msg, "bob", "builder"), answer_next(to, 200));
        assert_eq!(r.status(), Some(200), "MESSAGE to {gruu}");
        assert_eq!(got.body(), b"hello");
        assert!(
            silent.recv(Duration::from_millis(300)).await.is_none(),
            "the other instance does not get a request for {gruu}"
        );
    }
}

/// A recipient whose connection dies while a MESSAGE waits for its answer: that branch ends at
/// once (a transport error, RFC 3261 8.1.3.1), the other binding still gets the message, and no
/// client transaction is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_branch_whose_connection_dies_midway_ends_and_the_other_binding_answers() {
    let s = TestServer::with_users(&Backend::Sqlite, USERS, |_| {}).await;
    let mut tcp = s.tcp_client().await;
    register(&mut tcp, "alice", "wonderland", Some("<sip:alice@127.0.0.1:9;transport=tcp>")).await;
    let (mut udp, mut bob) = (s.udp_client().await, s.udp_client().await);
    register(&mut udp, "alice", "wonderland", None).await;
    assert_eq!(s.bindings_of("alice").len(), 2);

    let msg = Request::message(&bob, "bob", "alice");
    let (resp, ()) = tokio::join!(with_credentials(&mut bob, &msg, "bob", "builder"), async {
        // The TCP endpoint receives the MESSAGE and dies without answering; the UDP one
        // answers only after that, so the sender's answer waits on the dead branch ending.
        let frame = tcp.next_frame(Duration::from_secs(5)).await;
        assert!(matches!(frame, Some(sipfront_proto::Frame::Message(_))), "the MESSAGE on the TCP connection");
        drop(tcp);
        let (bytes, from) = udp.recv(Duration::from_secs(5)).await.expect("the MESSAGE over UDP");
        // The point of the test: the living branch answers late, after the dead one.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut ok = parse(&bytes).response_to(200);
        ok.set_to_tag("udp");
        ok.ensure_content_length();
        udp.socket.send_to(&ok.to_bytes(), from).await.expect("answer");
    });
    assert_eq!(resp.status(), Some(200), "the living binding's answer");
    let clean = eventually(Duration::from_secs(8), async || s.server.transactions.client_count() == 0).await;
    assert!(clean, "no client transaction left: {}", s.server.transactions.client_count());
}
