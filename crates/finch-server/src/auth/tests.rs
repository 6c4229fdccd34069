//! The decision as clients meet it, with their real Digest arithmetic.

use super::*;
use finch_proto::auth::digest::to_hex;
use finch_proto::auth::header::parse_authorization;

fn config(users: &str) -> Config {
    finch_config::load_str(users, "t.toml", Vec::new()).unwrap()
}

const USERS: &str = r#"
[[auth.users]]
user = "cam"
pass = "campass"
permissions = [{ action = "publish", path = "cams/*" }]

[[auth.users]]
user = "viewer"
pass = "secret"
ips = ["127.0.0.0/8"]
permissions = [{ action = "read" }]

[[auth.users]]
user = "md5only"
pass = "digest-md5:HA1"

[[auth.users]]
user = "basiconly"
pass = "sha256:SHA"
permissions = [{ action = "read" }]
"#;

fn auth() -> Auth {
    let ha1 = to_hex(&Algorithm::Md5.ha1("md5only", REALM, "pw"));
    let sha = to_hex(&finch_proto::auth::digest::sha256(b"pw"));
    let text = USERS.replace("HA1", &ha1).replace("SHA", &sha).replace(
        "pass = \"digest-md5",
        "permissions = [{ action = \"read\" }]\npass = \"digest-md5",
    );
    Auth::new(&config(&text), b"secret")
}

fn ask<'a>(authorization: Option<&'a str>, action: Action, path: &'a str) -> Ask<'a> {
    Ask {
        authorization,
        method: "DESCRIBE",
        uri: "rtsp://h/cams/1",
        peer: "127.0.0.1".parse().unwrap(),
        tls: false,
        action,
        path,
    }
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// What a client answering `challenge` with `pass` sends (qop if offered, as ffmpeg; or none,
/// as VLC and GStreamer).
fn digest(challenge: &str, user: &str, pass: &str, uri: &str, use_qop: bool, nc: u32) -> String {
    let Ok(Credentials::Digest(c)) = parse_authorization(&challenge.replacen(
        "Digest ",
        "Digest username=\"x\", uri=\"x\", response=\"x\", ",
        1,
    )) else {
        panic!("{challenge}")
    };
    let alg = Algorithm::from_param(c.algorithm.as_deref()).unwrap();
    let ha1 = alg.ha1(user, &c.realm, pass);
    let e = Expected {
        algorithm: alg,
        ha1: &ha1,
        method: "DESCRIBE",
    };
    let nc = format!("{nc:08x}");
    let qop = use_qop.then_some((nc.as_str(), "c0ffee", "auth"));
    let response = expected_response(&e, uri, &c.nonce, qop);
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        c.realm,
        c.nonce,
        alg.name()
    );
    if use_qop {
        h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"c0ffee\""));
    }
    h
}

#[test]
fn without_users_everything_is_anonymous() {
    let a = Auth::new(&Config::default(), b"s");
    assert!(!a.enabled());
    assert_eq!(
        a.decide(&ask(None, Action::Publish, "x")),
        Decision::Allow("any".into())
    );
}

#[test]
fn missing_credentials_get_the_three_challenges_in_order() {
    let a = auth();
    let Decision::Challenge(Reason::Missing, c) = a.decide(&ask(None, Action::Read, "cams/1"))
    else {
        panic!()
    };
    assert_eq!(c.len(), 3);
    assert!(c[0].starts_with("Digest realm=\"finch\"") && c[0].contains("algorithm=SHA-256"));
    assert!(c[1].contains("algorithm=MD5"));
    let nonce = |s: &str| {
        s.split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(nonce(&c[0]), nonce(&c[1]), "one nonce for both");
    assert_eq!(c[2], "Basic realm=\"finch\"");
    // Without basic_over_plain, Basic is offered over TLS only.
    let text = format!("{USERS}\n[auth]\nbasic_over_plain = false\n")
        .replace("pass = \"digest-md5:HA1\"", "pass = \"x\"")
        .replace("pass = \"sha256:SHA\"", "pass = \"y\"");
    let b = Auth::new(&config(&text), b"s");
    assert_eq!(b.challenges(false, false).len(), 2);
    assert_eq!(b.challenges(false, true).len(), 3);
}

#[test]
fn basic_right_wrong_not_permitted_and_from_the_wrong_address() {
    let a = auth();
    let right = basic("viewer", "secret");
    assert_eq!(
        a.decide(&ask(Some(&right), Action::Read, "cams/1")),
        Decision::Allow("viewer".into())
    );
    let wrong = basic("viewer", "nope");
    assert!(matches!(
        a.decide(&ask(Some(&wrong), Action::Read, "cams/1")),
        Decision::Challenge(Reason::WrongCredentials, _)
    ));
    assert_eq!(
        a.decide(&ask(Some(&right), Action::Publish, "cams/1")),
        Decision::Forbid(Reason::NotPermitted)
    );
    let mut far = ask(Some(&right), Action::Read, "cams/1");
    far.peer = "10.0.0.1".parse().unwrap();
    assert_eq!(a.decide(&far), Decision::Forbid(Reason::Address));
    let cam = basic("cam", "campass");
    assert_eq!(
        a.decide(&ask(Some(&cam), Action::Publish, "cams/1")),
        Decision::Allow("cam".into())
    );
    assert_eq!(
        a.decide(&ask(Some(&cam), Action::Publish, "other")),
        Decision::Forbid(Reason::NotPermitted)
    );
    // A sha256: secret checks Basic; a digest-md5: one cannot.
    assert_eq!(
        a.decide(&ask(
            Some(&basic("basiconly", "pw")),
            Action::Read,
            "cams/1"
        )),
        Decision::Allow("basiconly".into())
    );
    assert!(matches!(
        a.decide(&ask(Some(&basic("md5only", "pw")), Action::Read, "cams/1")),
        Decision::Challenge(Reason::WrongCredentials, _)
    ));
}

#[test]
fn digest_with_and_without_qop_md5_and_sha256() {
    let a = auth();
    let challenges = a.challenges(false, false);
    // Both challenges carry one nonce, so a client's nc goes on counting across them.
    for (nc, challenge, qop) in [
        (1, &challenges[0], true),
        (2, &challenges[1], true),
        (3, &challenges[1], false),
    ] {
        let h = digest(challenge, "viewer", "secret", "rtsp://h/cams/1", qop, nc);
        assert_eq!(
            a.decide(&ask(Some(&h), Action::Read, "cams/1")),
            Decision::Allow("viewer".into()),
            "{challenge} qop={qop}"
        );
    }
    // A stored MD5 HA1 answers MD5 only.
    let h = digest(&challenges[1], "md5only", "pw", "rtsp://h/cams/1", false, 1);
    assert_eq!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Allow("md5only".into())
    );
    let h = digest(&challenges[0], "md5only", "pw", "rtsp://h/cams/1", false, 1);
    assert!(matches!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Challenge(Reason::WrongCredentials, _)
    ));
    // A wrong password, and a response for another path.
    let h = digest(&challenges[1], "viewer", "nope", "rtsp://h/cams/1", true, 8);
    assert!(matches!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Challenge(Reason::WrongCredentials, _)
    ));
    let h = digest(
        &challenges[1],
        "viewer",
        "secret",
        "rtsp://h/cams/2",
        true,
        9,
    );
    assert!(matches!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Challenge(Reason::WrongCredentials, _)
    ));
}

#[test]
fn a_replayed_nc_and_a_stale_nonce_are_refused() {
    let a = auth();
    let c = a.challenges(false, false);
    let h = digest(&c[1], "viewer", "secret", "rtsp://h/cams/1", true, 7);
    assert!(matches!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Allow(_)
    ));
    assert!(matches!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Challenge(Reason::Replay, _)
    ));
    // A nonce minted six minutes ago (expiry 300 s): stale=true, and not a failed login.
    let old = Nonces::new(b"secret", 300).mint(unix_now() - 360, 1);
    let stale = format!("Digest realm=\"finch\", nonce=\"{old}\", algorithm=MD5");
    let h = digest(&stale, "viewer", "secret", "rtsp://h/cams/1", false, 1);
    let Decision::Challenge(Reason::StaleNonce, c) =
        a.decide(&ask(Some(&h), Action::Read, "cams/1"))
    else {
        panic!()
    };
    assert!(c[0].contains("stale=true"));
    // A nonce another worker minted under the same secret is good here.
    let other = Auth::new(
        &config(
            &USERS
                .replace("digest-md5:HA1", "x")
                .replace("sha256:SHA", "y"),
        ),
        b"secret",
    );
    let c = other.challenges(false, false);
    let h = digest(&c[1], "viewer", "secret", "rtsp://h/cams/1", false, 1);
    assert!(matches!(
        a.decide(&ask(Some(&h), Action::Read, "cams/1")),
        Decision::Allow(_)
    ));
}

#[test]
fn too_many_wrong_credentials_block_the_address_not_others() {
    let a = auth();
    let wrong = basic("viewer", "nope");
    let mut attacker = ask(Some(&wrong), Action::Read, "cams/1");
    attacker.peer = "127.0.0.2".parse().unwrap();
    for _ in 0..10 {
        assert!(matches!(a.decide(&attacker), Decision::Challenge(..)));
    }
    let right = basic("viewer", "secret");
    let mut same_address_right = ask(Some(&right), Action::Read, "cams/1");
    same_address_right.peer = attacker.peer;
    assert_eq!(
        a.decide(&same_address_right),
        Decision::Forbid(Reason::Blocked)
    );
    assert_eq!(
        a.decide(&ask(Some(&right), Action::Read, "cams/1")),
        Decision::Allow("viewer".into()),
        "127.0.0.1 is not caught"
    );
    // Requests without credentials do not count.
    let b = auth();
    let mut first = ask(None, Action::Read, "cams/1");
    first.peer = attacker.peer;
    for _ in 0..20 {
        assert!(matches!(
            b.decide(&first),
            Decision::Challenge(Reason::Missing, _)
        ));
    }
}

#[test]
fn the_anonymous_user_reads_where_it_may_without_credentials() {
    let text = format!(
        "{}\n[[auth.users]]\nuser = \"any\"\npass = \"\"\npermissions = [{{ action = \"read\", path = \"public/**\" }}]\n",
        USERS.replace("digest-md5:HA1", "x").replace("sha256:SHA", "y")
    );
    let a = Auth::new(&config(&text), b"s");
    assert_eq!(
        a.decide(&ask(None, Action::Read, "public/a/b")),
        Decision::Allow("any".into())
    );
    assert!(matches!(
        a.decide(&ask(None, Action::Read, "cams/1")),
        Decision::Challenge(Reason::Missing, _)
    ));
    assert!(matches!(
        a.decide(&ask(None, Action::Publish, "public/a")),
        Decision::Challenge(Reason::Missing, _)
    ));
}
