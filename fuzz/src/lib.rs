//! Helpers shared by the fuzz targets: CRC fix-ups (so that mutations reach the decoders
//! behind the CRC checks) and the HTTP world (engines on temporary state directories, a
//! connection driven through an in-memory stream, the answer parsed back).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use scopehold::daemon::{Engine, Home, Peer};
use scopehold_log::codec::{self, FRAME_HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CRC32C a frame of declared length `len` over `data` must carry (`FORMAT.md`).
pub fn frame_crc(len: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), data)
}

/// Rewrites the CRC of every frame from `start` on, for as long as the length fields lead
/// to frames within `buf`. Mutated inputs then fail on their structure, not on their CRC.
pub fn fix_frame_crcs(buf: &mut [u8], mut start: usize) {
    while start < buf.len() {
        let Ok(n) = codec::frame_extent(&buf[start..]) else {
            return;
        };
        let len = (n - FRAME_HEADER_LEN) as u32;
        let crc = frame_crc(len, &buf[start + FRAME_HEADER_LEN..start + n]);
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        start += n;
    }
}

/// Rewrites the CRC of a header of `len` bytes at the start of `buf` (segment or bundle
/// header: the CRC is the last four bytes, over everything before).
pub fn fix_header_crc(buf: &mut [u8], len: usize) {
    if buf.len() >= len {
        let crc = crc32c::crc32c(&buf[..len - 4]);
        buf[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The secret value stored in both engines. Upper case: no name (project, agent, secret) can
/// contain it, so it can only appear in an answer as a resolved value.
pub const CANARY: &str = "sk-live-FUZZ-CANARY-9c41e7d2b8a6";
/// The fixed time of the engines' clock: deterministic grants, one unauthenticated-denial
/// event per uid (the window never passes).
pub const NOW_MS: u64 = 1_767_225_600_000;
/// A uid that is no member: it can reach the daemon only with the agent's credential.
pub const STRANGER_UID: u32 = 4242;

/// The world the HTTP target serves: two engines, each on its own state directory holding
/// the project `demo`, the secret `openai/prod` (value [`CANARY`]), the agent `bot` and its
/// grant, made through the HTTP path itself.
#[derive(Debug)]
pub struct World {
    /// Served to [`STRANGER_UID`] only: its state cannot change (the peer is no admin), so
    /// the credential stays valid and the invariants are strict.
    pub fixed: Arc<Engine>,
    /// Served to the admin uid: the fuzzer may change anything in it.
    pub playground: Arc<Engine>,
    /// The admin uid (the one that initialised the state directories).
    pub admin: Peer,
    /// `bot`'s credential in `fixed`.
    pub fixed_token: String,
    /// `bot`'s credential in `playground` (until the fuzzer reissues or revokes it).
    pub playground_token: String,
    /// The runtime every input runs on: current thread, its clock paused (see [`exchange`]).
    pub rt: tokio::runtime::Runtime,
    /// The log directories of `fixed` and `playground`.
    pub log_dirs: [std::path::PathBuf; 2],
}

/// Log storage without fsync: the fuzzer appends to the log at every resolution and
/// denial; durability is not what is fuzzed here.
#[derive(Debug)]
struct NoSync;

struct NoSyncFile(std::fs::File);

impl scopehold_log::StorageFile for NoSyncFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self.0, buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
}

impl scopehold_log::Storage for NoSync {
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(NoSyncFile(f)))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(NoSyncFile(f)))
    }
    fn open_at(
        &self,
        path: &Path,
        offset: u64,
    ) -> std::io::Result<Box<dyn scopehold_log::StorageFile>> {
        // Positioned writes from `offset` on: a pre-zeroed segment is written in place.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
        Ok(Box::new(NoSyncFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// Sends `input` on one connection from `peer` and returns all that came back, once the
/// server has closed the connection. Nothing runs on another task, so a panic anywhere
/// reaches libFuzzer.
///
/// The client never shuts its write side: hyper (half-close off, as in production) would
/// drop a request still in flight when it reads the end of the stream. Instead the runtime's
/// clock is paused ([`World::rt`]): once the server waits for more input, tokio advances the
/// clock to its next timer, so an idle keep-alive connection ends at once by the
/// header-read timeout, and a body cut short ends by the body timeout, deterministically.
pub async fn exchange(engine: &Arc<Engine>, peer: Peer, input: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut rd, mut wr) = tokio::io::split(client);
    let serve = scopehold::daemon::server::serve_connection(server, engine.clone(), peer);
    let write = async {
        // The server may close before reading everything (a malformed head): not an error.
        let _ = wr.write_all(input).await;
        wr
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let (_, _, out) = tokio::join!(serve, write, read);
    out
}

/// One request, as a client writes it.
pub fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: scopehold\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A response read back by [`parse_responses`].
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<Vec<u8>>,
    /// The body.
    pub body: Vec<u8>,
    /// An answer to `HEAD`: a length declared, no body sent.
    pub bodiless: bool,
}

/// Splits what the server wrote into responses, panicking (a finding) on anything that is
/// not a well-formed HTTP/1.1 response with a `content-length`. `head_requests`: the input
/// held a `HEAD` request, whose answer has a length but no body.
pub fn parse_responses(mut out: &[u8], head_requests: bool) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed response head ({other:?}): {:?}",
                String::from_utf8_lossy(&out[..out.len().min(300)])
            ),
        };
        // HTTP/1.1, or 1.0 in answer to a 1.0 request.
        assert!(r.version.is_some(), "no HTTP version");
        let status = r.code.expect("a complete head has a status");
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.to_vec())
        };
        assert!(
            header("transfer-encoding").is_none(),
            "the daemon's answers have a known length"
        );
        let content_type = header("content-type");
        let len: usize = match header("content-length") {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("a numeric content-length"),
            None if (100..200).contains(&status) => 0,
            None => panic!("response {status} without content-length"),
        };
        out = &out[n..];
        // A HEAD answer declares the length of the body it leaves out.
        let bodiless = head_requests && len > 0 && (out.is_empty() || out.starts_with(b"HTTP/1."));
        let len = if bodiless { 0 } else { len };
        assert!(
            out.len() >= len,
            "response body cut short: {} of {len} bytes",
            out.len()
        );
        answers.push(Answer {
            status,
            content_type,
            body: out[..len].to_vec(),
            bodiless,
        });
        out = &out[len..];
    }
    answers
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn open_engine(dir: &Path) -> Arc<Engine> {
    let home = home(dir);
    home.init().expect("initialising the state directory");
    let clock: scopehold_log::Clock = Arc::new(|| NOW_MS);
    Arc::new(Engine::open_with_storage(&home, clock, Arc::new(NoSync)).expect("opening the engine"))
}

fn admin_call(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    peer: Peer,
    path: &str,
    body: &str,
) -> serde_json::Value {
    let out = rt.block_on(exchange(engine, peer, &request("POST", path, None, body)));
    let a = parse_responses(&out, false);
    assert_eq!(a.len(), 1, "one answer to {path}");
    assert_eq!(
        a[0].status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&a[0].body)
    );
    serde_json::from_slice(&a[0].body).expect("a JSON answer")
}

fn home(dir: &Path) -> Home {
    Home::new(Some(dir.join("state")), None).expect("a state directory")
}

/// Makes the world of [`World`] in `engine` through its HTTP routes; returns `bot`'s
/// credential.
fn populate(rt: &tokio::runtime::Runtime, engine: &Arc<Engine>, admin: Peer) -> String {
    admin_call(
        rt,
        engine,
        admin.clone(),
        "/v1/projects",
        r#"{"name":"demo"}"#,
    );
    admin_call(
        rt,
        engine,
        admin.clone(),
        "/v1/secrets",
        &format!(r#"{{"name":"openai/prod","projects":["demo"],"value":"{CANARY}"}}"#),
    );
    let agent = admin_call(rt, engine, admin.clone(), "/v1/agents", r#"{"name":"bot"}"#);
    admin_call(
        rt,
        engine,
        admin.clone(),
        "/v1/grants",
        r#"{"identity":"agent:bot","secret":"openai/prod","project":"demo"}"#,
    );
    agent["credential"]
        .as_str()
        .expect("agent creation answers a credential")
        .to_string()
}

/// Where the world's state directories go: `$SCOPEHOLD_FUZZ_STATE` if set, else
/// `$TMPDIR/scopehold-fuzz-http/<pid>`. The world lives in a static, never dropped, so a
/// process cannot remove its own directory at exit: each start removes those of processes
/// that are gone instead.
fn state_root() -> std::path::PathBuf {
    if let Some(root) = std::env::var_os("SCOPEHOLD_FUZZ_STATE") {
        return root.into();
    }
    let base = std::env::temp_dir().join("scopehold-fuzz-http");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let gone = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let root = base.join(std::process::id().to_string());
    // A directory left by an earlier process with this pid is stale too.
    let _ = std::fs::remove_dir_all(&root);
    root
}

/// The world, made on first use (see [`state_root`] for where).
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let root = state_root();
        let dir = |name: &str| {
            let p = root.join(name);
            std::fs::create_dir_all(&p).expect("the state directory's parent");
            p
        };
        let (fixed_dir, playground_dir) = (dir("fixed"), dir("playground"));
        let uid = std::fs::metadata(&fixed_dir)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .expect("the state directory's owner");
        let admin = Peer::local(uid, Some(1000));
        let fixed = open_engine(&fixed_dir);
        let playground = open_engine(&playground_dir);
        let fixed_token = populate(&rt, &fixed, admin.clone());
        let playground_token = populate(&rt, &playground, admin.clone());
        let log_dirs = [home(&fixed_dir).log_dir(), home(&playground_dir).log_dir()];
        World {
            log_dirs,
            fixed,
            playground,
            admin,
            fixed_token,
            playground_token,
            rt,
        }
    })
}

/// The golden vectors' key seed (`log/tests/it/golden.rs`): bundles signed with it verify
/// under `log/golden/log.pub`, the key the bundle target uses.
pub const GOLDEN_SEED: [u8; 32] = *b"scopehold golden vector key seed";

/// The HTTP seeds: real requests, `@@TOKEN@@` standing for the credential. The first byte
/// picks the peer (0: the non-member uid on the fixed engine, 1: the admin).
pub fn http_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let t = Some("@@TOKEN@@");
    let resolve = r#"{"secret":"openai/prod","project":"demo"}"#;
    let mut seeds: Vec<(&str, Vec<u8>, u8)> = vec![
        ("health", request("GET", "/v1/health", None, ""), 0),
        ("resolve", request("POST", "/v1/resolve", t, resolve), 0),
        ("resolve_admin", request("POST", "/v1/resolve", t, resolve), 1),
        (
            "resolve_version",
            request(
                "POST",
                "/v1/resolve",
                t,
                r#"{"secret":"openai/prod","project":"demo","version":1}"#,
            ),
            0,
        ),
        ("resolve_no_token", request("POST", "/v1/resolve", None, resolve), 0),
        (
            "resolve_bad_token",
            request("POST", "/v1/resolve", Some("not-a-credential"), resolve),
            0,
        ),
        (
            "resolve_wrong_project",
            request("POST", "/v1/resolve", t, r#"{"secret":"openai/prod","project":"other"}"#),
            0,
        ),
        ("resolve_bad_json", request("POST", "/v1/resolve", t, "{not json"), 0),
        ("whoami", request("GET", "/v1/whoami", t, ""), 0),
        ("whoami_admin", request("GET", "/v1/whoami", None, ""), 1),
        ("projects_denied", request("GET", "/v1/projects", t, ""), 0),
        ("projects", request("GET", "/v1/projects", None, ""), 1),
        ("project_create", request("POST", "/v1/projects", None, r#"{"name":"p2"}"#), 1),
        ("secrets", request("GET", "/v1/secrets", None, ""), 1),
        (
            "secret_put",
            request(
                "POST",
                "/v1/secrets",
                None,
                r#"{"name":"anthropic/dev","projects":["demo"],"value":"v-1"}"#,
            ),
            1,
        ),
        (
            "secret_rotate",
            request(
                "POST",
                "/v1/secrets/rotate",
                None,
                r#"{"name":"openai/prod","value":"v-2","grace_secs":60}"#,
            ),
            1,
        ),
        (
            "secret_revoke",
            request("POST", "/v1/secrets/revoke", None, r#"{"name":"anthropic/dev"}"#),
            1,
        ),
        ("agents", request("GET", "/v1/agents", None, ""), 1),
        (
            "agent_create",
            request("POST", "/v1/agents", None, r#"{"name":"bot2","uid":1001}"#),
            1,
        ),
        ("agent_revoke", request("POST", "/v1/agents/revoke", None, r#"{"name":"bot2"}"#), 1),
        ("agent_reissue", request("POST", "/v1/agents/reissue", None, r#"{"name":"bot2"}"#), 1),
        ("members", request("GET", "/v1/members", None, ""), 1),
        (
            "member_add",
            request("POST", "/v1/members", None, r#"{"name":"alice","uid":1002,"admin":false}"#),
            1,
        ),
        ("grants", request("GET", "/v1/grants", None, ""), 1),
        (
            "grant_create",
            request(
                "POST",
                "/v1/grants",
                None,
                r#"{"identity":"agent:bot","secret":"openai/prod","project":"demo","ttl_secs":3600,"max_uses":5,"rate_per_min":10}"#,
            ),
            1,
        ),
        ("grant_revoke", request("POST", "/v1/grants/revoke", None, r#"{"id":1}"#), 1),
        ("not_found", request("GET", "/v1/nope", None, ""), 0),
        ("wrong_method", request("DELETE", "/v1/resolve", t, ""), 0),
        ("garbage", b"BLAH\r\n\r\n".to_vec(), 0),
        (
            "chunked",
            format!(
                "POST /v1/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer @@TOKEN@@\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{resolve}\r\n0\r\n\r\n",
                resolve.len()
            )
            .into_bytes(),
            0,
        ),
        (
            "expect_continue",
            format!(
                "POST /v1/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer @@TOKEN@@\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{resolve}",
                resolve.len()
            )
            .into_bytes(),
            0,
        ),
        ("head", b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 0),
        ("http10", b"GET /v1/health HTTP/1.0\r\n\r\n".to_vec(), 0),
    ];
    // Pipelined: two resolutions and a whoami on one connection, the last closing it.
    let mut pipelined = request("POST", "/v1/resolve", t, resolve);
    pipelined.extend(request("POST", "/v1/resolve", t, resolve));
    pipelined.extend(
        b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer @@TOKEN@@\r\nConnection: close\r\n\r\n",
    );
    seeds.push(("pipelined", pipelined, 0));
    seeds
        .into_iter()
        .map(|(name, bytes, sel)| {
            let mut v = vec![sel];
            v.extend(bytes);
            (name, v)
        })
        .collect()
}

/// Writes the seed corpus of every target under `dir/<target>/`, from real inputs: the
/// requests of [`http_seeds`]; the event bodies in this world's logs (after the HTTP seeds
/// have been served, so that resolutions and denials are among them); those logs' segments
/// and frames and the golden ones; bundles exported (`scopehold_log::export`) from a log
/// signed with the golden key holding those same bodies, and the golden bundle.
pub fn write_seeds(dir: &Path, golden: &Path) {
    use scopehold_log::{Entry, Log, LogKey, LogOptions, LogReader};
    let w = world();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("a corpus directory");
        std::fs::write(d.join(name), bytes).expect("writing a seed");
    };
    for (name, bytes) in http_seeds() {
        put("http", name, &bytes);
        let (engine, peer, token) = if bytes[0] == 1 {
            (&w.playground, w.admin.clone(), &w.playground_token)
        } else {
            (
                &w.fixed,
                Peer::local(STRANGER_UID, Some(4242)),
                &w.fixed_token,
            )
        };
        let input = String::from_utf8_lossy(&bytes[1..]).replace("@@TOKEN@@", token);
        w.rt.block_on(exchange(engine, peer, input.as_bytes()));
    }
    // Event bodies, one seed per distinct (kind, body).
    let mut bodies = std::collections::BTreeSet::new();
    for log_dir in &w.log_dirs {
        let r = LogReader::open(log_dir, None).expect("the world's log");
        for rec in r.events_from(0).expect("its events") {
            let rec = rec.expect("an event");
            let body = rec.body.expect("a body in the log itself");
            bodies.insert((rec.envelope.kind, body.bytes.to_vec()));
        }
        for e in std::fs::read_dir(log_dir).expect("the log directory") {
            let p = e.expect("an entry").path();
            if p.extension().is_some_and(|x| x == "seg") {
                let seg = std::fs::read(&p).expect("a segment");
                // A pre-zeroed segment's zero tail is megabytes of nothing for the fuzzer.
                let data = seg.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                put(
                    "frame",
                    "world_segment",
                    &[&[0u8][..], &seg[..data]].concat(),
                );
            }
        }
    }
    for (i, (kind, body)) in bodies.iter().enumerate() {
        put(
            "event_body",
            &format!("{i:02}_kind{kind}"),
            &[&kind.to_le_bytes()[..], body].concat(),
        );
    }
    // A log under the golden key holding those bodies, in batches of 1, 2 and 3.
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let t = std::sync::atomic::AtomicU64::new(NOW_MS);
    let opts = LogOptions {
        clock: Arc::new(move || t.fetch_add(1000, std::sync::atomic::Ordering::Relaxed)),
        ..LogOptions::default()
    };
    let key = LogKey::from_seed(&GOLDEN_SEED);
    let public = key.public();
    let log = Log::create(tmp.path(), key, opts).expect("a log");
    let entries: Vec<Entry> = bodies
        .iter()
        .map(|(kind, body)| {
            let secret = scopehold::domain::EventKind::from_number(*kind)
                .is_some_and(|k| k.class() == scopehold_log::BodyClass::Secret);
            if secret {
                Entry::secret(*kind, body.clone()).expect("a body within the limit")
            } else {
                Entry::public(*kind, body.clone())
            }
        })
        .collect();
    let mut entries = entries.into_iter();
    for n in [1, 2, 3] {
        let batch: Vec<Entry> = entries.by_ref().take(n).collect();
        if !batch.is_empty() {
            log.append_batch(batch).expect("appending");
        }
    }
    log.close().expect("closing the log");
    let r = LogReader::open(tmp.path(), None).expect("the golden-key log");
    for (name, from) in [("export_all", 0), ("export_from_1", 1)] {
        let mut b = Vec::new();
        scopehold_log::export(&r, &public, from, None, &mut b).expect("an export");
        put("bundle", name, &[&[0u8][..], &b].concat());
        put("frame", name, &[&[0u8][..], &b].concat());
    }
    let gb = std::fs::read(golden.join("bundle.bin")).expect("the golden bundle");
    put("bundle", "golden", &[&[0u8][..], &gb].concat());
    put("bundle", "golden_fixcrc", &[&[1u8][..], &gb].concat());
    let gs = std::fs::read(golden.join("00000000000000000000.seg")).expect("the golden segment");
    put("frame", "golden_segment", &[&[0u8][..], &gs].concat());
    put("frame", "golden_bundle", &[&[0u8][..], &gb].concat());
    // The golden segment's frames one by one.
    let mut pos = scopehold_log::codec::SEGMENT_HEADER_LEN;
    let mut i = 0;
    while let Ok(n) = codec::frame_extent(&gs[pos..]) {
        put(
            "frame",
            &format!("golden_frame_{i}"),
            &[&[1u8][..], &gs[pos..pos + n]].concat(),
        );
        pos += n;
        i += 1;
    }
}
