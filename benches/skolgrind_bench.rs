//! Throughput benchmark: pushes a synthetic municipality to Skolgrind over EGIL SCIM and
//! compares it with an empty actix-web handler run with the same process setup.
//!
//! ```text
//! cargo bench --bench skolgrind-bench -- egil [--pupils N] [--staff N] [--groups N]
//!     [--activities N] [--connections N] [--baseline-seconds S] [--quick]
//! cargo bench --bench skolgrind-bench -- login [--persons N] [--tenants N]
//!     [--connections N] [--seconds S] [--rounds N] [--cold] [--no-warm-up] [--cache-mb M] [--model-cache-mb M]
//!     [--engine sled|redb] [--data DIR] [--quick]
//! cargo bench --bench skolgrind-bench -- flood [--seconds S] [--quota N]
//! ```
//!
//! `flood`: one tenant sends writes at 10× its quota while a well-behaved tenant writes at
//! half of its own; prints both tenants' throughput and p99 (and the well-behaved tenant's
//! p99 alone, as the baseline), then the overhead of the rate-limit + metrics middleware:
//! the same authenticated GET against the full stack and against the bare handlers.
//!
//! Everything runs in one process: the real server (sled store, durable writes) and the
//! baseline server each on their own actix system thread, the clients on a separate
//! two-thread tokio runtime. Each worker owns one HTTP/1.1 keep-alive connection and
//! pulls the next request from a shared counter; resource types are sent in EGIL order
//! with a barrier between types, so references point at objects already created.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The same allocator as the `skolgrind` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
// The `bytes` crate as re-exported by actix-web; reqwest accepts it as a body, and
// cloning it per request is a reference-count bump rather than a copy.
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use skolgrind::config;
use tokio::runtime::Runtime;
use uuid::Uuid;

const USAGE: &str = "usage: cargo bench --bench skolgrind-bench -- egil [--pupils N] [--staff N] \
[--groups N] [--activities N] [--connections N] [--baseline-seconds S] [--quick]\n\
       cargo bench --bench skolgrind-bench -- flood [--seconds S] [--quota N]\n\
       cargo bench --bench skolgrind-bench -- ss12000 [--persons N] [--job-size N] \
[--connections N] [--quick]";

/// The demo tenant's API key in the embedded default config.
const API_KEY: &str = "bench-key";
/// Actix workers for both servers (the machine's core count in CI).
const SERVER_WORKERS: usize = 2;
/// Connection counts run when `--connections` is not given.
const DEFAULT_CONNECTIONS: [usize; 2] = [1, 16];
/// `--quick` divides every size by this.
const QUICK_DIVISOR: usize = 50;
const PUPILS_PER_SCHOOL_UNIT: usize = 500;
const GROUP_SIZE: usize = 25;

/// How big the synthetic municipality is.
struct Sizes {
    pupils: usize,
    staff: usize,
    groups: usize,
    activities: usize,
}

/// The parsed command line.
struct Options {
    sizes: Sizes,
    connections: Vec<usize>,
    /// Stops the baseline push after this long instead of sending every request.
    baseline_limit: Option<Duration>,
}

impl Options {
    /// Parses the arguments after the program name. The scenario name `egil` is the only
    /// one and may be left out; the `--bench` flag cargo appends is ignored.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut sizes = Sizes {
            pupils: 50_000,
            staff: 5_000,
            groups: 3_000,
            activities: 10_000,
        };
        let mut connections = DEFAULT_CONNECTIONS.to_vec();
        let mut baseline_limit = None;
        let mut quick = false;
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "egil" | "--bench" => {}
                "--quick" => quick = true,
                "--pupils" => sizes.pupils = count(&arg, &value()?)?,
                "--staff" => sizes.staff = count(&arg, &value()?)?,
                "--groups" => sizes.groups = count(&arg, &value()?)?,
                "--activities" => sizes.activities = count(&arg, &value()?)?,
                "--connections" => connections = vec![count(&arg, &value()?)?],
                "--baseline-seconds" => {
                    let v = value()?;
                    let secs = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or(format!("{arg}: {v:?} is not a positive number of seconds"))?;
                    baseline_limit = Some(Duration::from_secs_f64(secs));
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if quick {
            for n in [
                &mut sizes.pupils,
                &mut sizes.staff,
                &mut sizes.groups,
                &mut sizes.activities,
            ] {
                *n = (*n / QUICK_DIVISOR).max(1);
            }
        }
        Ok(Options {
            sizes,
            connections,
            baseline_limit,
        })
    }
}

/// Parses a count of at least one.
fn count(flag: &str, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(format!("{flag}: {v:?} is not a whole number of at least 1"))
}

// ---------------------------------------------------------------------------------------
// The synthetic municipality
// ---------------------------------------------------------------------------------------

/// The object kinds; each has its own id range so ids never collide across types.
#[derive(Clone, Copy)]
enum Kind {
    Organisation = 1,
    SchoolUnitGroup,
    SchoolUnit,
    User,
    Employment,
    StudentGroup,
    Activity,
}

impl Kind {
    /// The EGIL resource type, as in the URL path and in `$ref`.
    fn resource(self) -> &'static str {
        match self {
            Kind::Organisation => "Organisations",
            Kind::SchoolUnitGroup => "SchoolUnitGroups",
            Kind::SchoolUnit => "SchoolUnits",
            Kind::User => "Users",
            Kind::Employment => "Employments",
            Kind::StudentGroup => "StudentGroups",
            Kind::Activity => "Activities",
        }
    }

    /// The SS12000 schema URN for this kind (for users, the EGIL extension's).
    fn schema(self) -> String {
        let name = match self {
            Kind::Organisation => "Organisation",
            Kind::SchoolUnitGroup => "SchoolUnitGroup",
            Kind::SchoolUnit => "SchoolUnit",
            Kind::User => "User",
            Kind::Employment => "Employment",
            Kind::StudentGroup => "StudentGroup",
            Kind::Activity => "Activity",
        };
        format!("urn:scim:schemas:extension:sis:school:1.0:{name}")
    }

    /// The deterministic id of the `index`th object of this kind: a version 4 layout
    /// `5c01000K-0000-4000-8000-IIIIIIIIIIII`, K the kind and I the index.
    fn id(self, index: usize) -> String {
        let bits =
            ((0x5c01_0000 | self as u128) << 96) | (0x4000 << 64) | (0x8000 << 48) | index as u128;
        Uuid::from_u128(bits).hyphenated().to_string()
    }

    /// A SCIM reference to the `index`th object of this kind.
    fn reference(self, index: usize) -> Value {
        let id = self.id(index);
        json!({"value": id, "$ref": format!("{}/{id}", self.resource())})
    }
}

/// The requests for one resource type.
struct Batch {
    kind: Kind,
    bodies: Vec<Bytes>,
}

/// Every request body, in EGIL order.
struct Municipality {
    batches: Vec<Batch>,
}

impl Municipality {
    fn requests(&self) -> usize {
        self.batches.iter().map(|b| b.bodies.len()).sum()
    }

    fn bytes(&self) -> usize {
        self.batches
            .iter()
            .flat_map(|b| &b.bodies)
            .map(Bytes::len)
            .sum()
    }
}

/// Builds one batch from the JSON documents for objects `0..n` of a kind.
fn batch(kind: Kind, n: usize, doc: impl Fn(usize) -> Value) -> Batch {
    let bodies = (0..n)
        .map(|i| Bytes::from(serde_json::to_vec(&doc(i)).unwrap()))
        .collect();
    Batch { kind, bodies }
}

/// Generates the municipality: one organisation and school-unit group, a school unit per
/// 500 pupils (at least two), pupils enrolled in them, staff each with one teaching
/// employment, student groups of 25 pupils, and activities for the groups taught by one
/// or two of the employments, every tenth with a parent activity.
fn generate(s: &Sizes) -> Municipality {
    let units = (s.pupils / PUPILS_PER_SCHOOL_UNIT).max(2);
    let unit_of_pupil = |p: usize| p * units / s.pupils;
    let first_member = |g: usize| (g * GROUP_SIZE) % s.pupils;
    let owner_of_group = |g: usize| unit_of_pupil(first_member(g));

    let org = |kind: Kind, name: &str| {
        batch(kind, 1, |i| {
            json!({
                "schemas": [kind.schema()],
                "externalId": kind.id(i),
                "displayName": name,
            })
        })
    };
    let school_units = batch(Kind::SchoolUnit, units, |u| {
        json!({
            "schemas": [Kind::SchoolUnit.schema()],
            "externalId": Kind::SchoolUnit.id(u),
            "displayName": format!("Skola {}", u + 1),
            "schoolUnitCode": format!("{:08}", 10_000_000 + u),
            "organisation": Kind::Organisation.reference(0),
            "schoolUnitGroup": Kind::SchoolUnitGroup.reference(0),
            "municipalityCode": "9999",
        })
    });
    // Users 0..pupils are pupils, the rest staff; `n` counts from 1 within each.
    let person = |i: usize, n: usize, given: &str, family: &str, school: Value| {
        let id = Kind::User.id(i);
        let mut doc = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", Kind::User.schema()],
            "externalId": id,
            "userName": format!("{id}@edu.bench.example"),
            "displayName": format!("{given} {n}"),
            "name": {"familyName": family, "givenName": given},
            "emails": [{"value": format!("{}{n}@skola.bench.example", &given[..1].to_lowercase())}],
        });
        doc[Kind::User.schema()] = school;
        doc
    };
    let users = batch(Kind::User, s.pupils + s.staff, |i| {
        if i < s.pupils {
            // Born 2010..=2018; the oldest are in year 9.
            let mut enrolment = Kind::SchoolUnit.reference(unit_of_pupil(i));
            enrolment["schoolYear"] = json!(9 - i % 9);
            enrolment["schoolType"] = json!("GR");
            let school = json!({"enrolments": [enrolment], "civicNo": civic_no(2010, 9, i)});
            person(i, i + 1, "Elev", "Elevsson", school)
        } else {
            let j = i - s.pupils;
            let school = json!({"civicNo": civic_no(1960, 40, j)});
            person(i, j + 1, "Lärare", "Lärarsson", school)
        }
    });
    let employments = batch(Kind::Employment, s.staff, |e| {
        json!({
            "schemas": [Kind::Employment.schema()],
            "externalId": Kind::Employment.id(e),
            "employedAt": Kind::SchoolUnit.reference(e % units),
            "user": Kind::User.reference(s.pupils + e),
            "employmentRole": "Lärare",
            "signature": signature(e),
        })
    });
    let groups = batch(Kind::StudentGroup, s.groups, |g| {
        let members: Vec<Value> = (0..GROUP_SIZE.min(s.pupils))
            .map(|k| Kind::User.reference((first_member(g) + k) % s.pupils))
            .collect();
        json!({
            "schemas": [Kind::StudentGroup.schema()],
            "externalId": Kind::StudentGroup.id(g),
            "displayName": format!("Grupp {}", g + 1),
            "studentGroupType": "Undervisning",
            "owner": Kind::SchoolUnit.reference(owner_of_group(g)),
            "schoolType": "GR",
            "studentMemberships": members,
        })
    });
    let activities = batch(Kind::Activity, s.activities, |a| {
        let g = a % s.groups;
        let mut teachers = vec![Kind::Employment.reference(a % s.staff)];
        if a.is_multiple_of(3) && s.staff > 1 {
            teachers.push(Kind::Employment.reference((a + 1) % s.staff));
        }
        let mut doc = json!({
            "schemas": [Kind::Activity.schema()],
            "externalId": Kind::Activity.id(a),
            "displayName": format!("Grupp {}-Activity", g + 1),
            "owner": Kind::SchoolUnit.reference(owner_of_group(g)),
            "groups": [Kind::StudentGroup.reference(g)],
            "teachers": teachers,
        });
        if a % 10 == 9 {
            doc["parentActivity"] = json!([{"value": Kind::Activity.id(a - 9)}]);
        }
        doc
    });
    Municipality {
        batches: vec![
            org(Kind::Organisation, "Kommunen"),
            org(Kind::SchoolUnitGroup, "Kommunens skolor"),
            school_units,
            users,
            employments,
            groups,
            activities,
        ],
    }
}

/// The `i`th distinct valid civic number `YYYYMMDDNNNC` with a birth year in
/// `first_year..first_year + years` (unique for `i` below `years * 12 * 28 * 1000`).
fn civic_no(first_year: usize, years: usize, i: usize) -> String {
    let year = first_year + i % years;
    let rest = i / years;
    let month = 1 + rest % 12;
    let day = 1 + rest / 12 % 28;
    let serial = rest / (12 * 28) % 1000;
    let nine = format!("{:02}{month:02}{day:02}{serial:03}", year % 100);
    format!("{year}{}{}", &nine[2..], luhn_check_digit(&nine))
}

/// The Luhn check digit for `digits` (weights 2, 1, 2, 1, … from the left).
fn luhn_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d - b'0') * if i % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    (10 - sum % 10) % 10
}

/// A four-letter staff signature derived from the index.
fn signature(i: usize) -> String {
    (0..4)
        .map(|k| char::from(b'a' + (i / 26usize.pow(k) % 26) as u8))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// A server running on its own actix system thread.
struct Running {
    base: String,
    handle: ServerHandle,
    thread: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn start(server: Server, addr: SocketAddr) -> Self {
        let handle = server.handle();
        let thread = std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
        Running {
            base: format!("http://{addr}"),
            handle,
            thread,
        }
    }

    /// Skolgrind with the embedded default config, storing in `data_dir`.
    fn skolgrind(data_dir: &Path) -> Self {
        let mut cfg = config::load_defaults(API_KEY).unwrap();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.data_dir = data_dir.to_path_buf();
        cfg.workers = Some(SERVER_WORKERS);
        // The push measures the data path, not the rate limits.
        let unlimited = skolgrind::ops::config::Quota {
            requests: 1_000_000,
            per: Duration::from_secs(1),
        };
        cfg.ops.writes = unlimited;
        cfg.ops.reads = unlimited;
        let state = skolgrind::app::build_state(&cfg).unwrap();
        let (server, addr) = skolgrind::app::bind(&cfg, state).unwrap();
        Self::start(server, addr)
    }

    /// An actix-web server whose handler reads the body and answers 201 `{}`.
    fn baseline() -> Self {
        async fn created(_body: Bytes) -> HttpResponse {
            HttpResponse::Created()
                .content_type("application/scim+json")
                .body("{}")
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(|| {
            App::new().service(
                web::resource(["/egil/{type}", "/egil/{type}/{id}"])
                    .route(web::post().to(created))
                    .route(web::put().to(created)),
            )
        })
        .workers(SERVER_WORKERS)
        .listen_auto_h2c(listener)
        .unwrap()
        .run();
        Self::start(server, addr)
    }

    /// Stops the server gracefully and waits for its thread (and so its store) to close.
    fn stop(self, rt: &Runtime) {
        rt.block_on(self.handle.stop(true));
        self.thread.join().unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// What one push (or one worker's share of it) observed.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.failures += other.failures;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn fail(&mut self, message: String) {
        self.failures += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(message);
        }
    }
}

/// One batch being sent by several workers.
struct Job {
    town: Arc<Municipality>,
    batch: usize,
    url: String,
    next: AtomicUsize,
    stop_at: Option<Instant>,
}

/// Sends requests from the job until it is exhausted (or its time is up).
async fn worker(client: reqwest::Client, job: Arc<Job>) -> Tally {
    let bodies = &job.town.batches[job.batch].bodies;
    let mut tally = Tally::default();
    loop {
        if job.stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let Some(body) = bodies.get(job.next.fetch_add(1, Ordering::Relaxed)) else {
            break;
        };
        let start = Instant::now();
        let sent = client
            .post(&job.url)
            .header("content-type", "application/scim+json")
            .header("x-api-key", API_KEY)
            .body(body.clone())
            .send()
            .await;
        // Read the whole answer: the latency covers it and the connection stays reusable.
        let answer = match sent {
            Ok(res) => {
                let status = res.status();
                res.text().await.map(|text| (status, text))
            }
            Err(e) => Err(e),
        };
        tally.latencies.push(start.elapsed());
        match answer {
            Ok((status, _)) if status == reqwest::StatusCode::CREATED => {}
            Ok((status, text)) => tally.fail(format!("POST {} -> {status}: {text}", job.url)),
            Err(e) => tally.fail(format!("POST {} -> {e}", job.url)),
        }
    }
    tally
}

/// Sends the municipality to `base` with `connections` workers, one batch (resource type)
/// at a time, optionally stopping after `limit`. Returns the tally and the wall time.
async fn push(
    base: &str,
    town: &Arc<Municipality>,
    connections: usize,
    limit: Option<Duration>,
) -> (Tally, Duration) {
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .build()
                .unwrap()
        })
        .collect();
    let mut tally = Tally::default();
    let start = Instant::now();
    let stop_at = limit.map(|l| start + l);
    for (b, batch) in town.batches.iter().enumerate() {
        let job = Arc::new(Job {
            town: town.clone(),
            batch: b,
            url: format!("{base}/egil/{}", batch.kind.resource()),
            next: AtomicUsize::new(0),
            stop_at,
        });
        let workers: Vec<_> = clients
            .iter()
            .map(|c| tokio::spawn(worker(c.clone(), job.clone())))
            .collect();
        for w in workers {
            tally.absorb(w.await.unwrap());
        }
    }
    (tally, start.elapsed())
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// Summary figures of one push.
struct Figures {
    requests: usize,
    elapsed: Duration,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn of(tally: &mut Tally, elapsed: Duration) -> Self {
        tally.latencies.sort_unstable();
        Figures {
            requests: tally.latencies.len(),
            elapsed,
            per_second: tally.latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&tally.latencies, 0.50),
            p99: percentile(&tally.latencies, 0.99),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} req/s  p50 {:.2} ms  p99 {:.2} ms",
            grouped(self.per_second.round() as usize),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
        )
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `n` with thousands separators: 68001 → "68,001".
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_failures(who: &str, tally: &Tally) {
    if let Some(first) = &tally.first_failure {
        println!(
            "  {who}: {} request(s) not answered 201; first: {first}",
            grouped(tally.failures)
        );
    }
}

/// Pushes the municipality to a fresh Skolgrind and then to the baseline, and prints the
/// comparison.
fn round(rt: &Runtime, town: &Arc<Municipality>, connections: usize, limit: Option<Duration>) {
    let data = tempfile::tempdir().unwrap();
    let server = Running::skolgrind(data.path());
    let (mut sk, sk_time) = rt.block_on(push(&server.base, town, connections, None));
    server.stop(rt);
    drop(data);

    let server = Running::baseline();
    let (mut bl, bl_time) = rt.block_on(push(&server.base, town, connections, limit));
    server.stop(rt);

    let skf = Figures::of(&mut sk, sk_time);
    let blf = Figures::of(&mut bl, bl_time);
    println!(
        "egil push, {connections} connection(s): {} requests in {:.1} s",
        grouped(skf.requests),
        skf.elapsed.as_secs_f64()
    );
    println!(
        "  skolgrind: {}  (durable: each 201 is after fsync)",
        skf.line()
    );
    print_failures("skolgrind", &sk);
    let partial = if blf.requests < skf.requests {
        format!(
            "; {} requests in {:.1} s",
            grouped(blf.requests),
            blf.elapsed.as_secs_f64()
        )
    } else {
        String::new()
    };
    println!(
        "  baseline : {}  (empty actix handler, same process setup{partial})",
        blf.line()
    );
    print_failures("baseline", &bl);
    println!(
        "  ratio    : {:.2} x baseline throughput",
        skf.per_second / blf.per_second
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "login") {
        login_storm::main();
        return;
    }
    if args.iter().any(|a| a == "ss12000") {
        ss12000::main(&args);
        return;
    }
    if args.iter().any(|a| a == "flood") {
        let opts = flood::Options::parse(args.into_iter()).unwrap_or_else(|e| {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2)
        });
        flood::run(&opts);
        return;
    }
    let opts = Options::parse(args.into_iter()).unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2)
    });
    let s = &opts.sizes;

    let started = Instant::now();
    let town = Arc::new(generate(s));
    let counts: Vec<String> = town
        .batches
        .iter()
        .map(|b| format!("{} {}", grouped(b.bodies.len()), b.kind.resource()))
        .collect();
    println!(
        "municipality: {} pupils, {} staff, {} groups, {} activities",
        grouped(s.pupils),
        grouped(s.staff),
        grouped(s.groups),
        grouped(s.activities)
    );
    println!(
        "  {} = {} requests, {:.1} MB of JSON, generated in {:.1} s",
        counts.join(", "),
        grouped(town.requests()),
        town.bytes() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for &c in &opts.connections {
        round(&rt, &town, c, opts.baseline_limit);
    }
}

// ---------------------------------------------------------------------------------------
// The flood scenario
// ---------------------------------------------------------------------------------------

mod flood {
    use super::*;

    pub struct Options {
        seconds: f64,
        /// Write quota per second of each tenant.
        quota: u32,
    }

    impl Options {
        pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
            let mut o = Options {
                seconds: 10.0,
                quota: 100,
            };
            while let Some(arg) = args.next() {
                let mut value = || args.next().ok_or(format!("{arg} needs a value"));
                match arg.as_str() {
                    "flood" | "--bench" => {}
                    "--seconds" => {
                        let v = value()?;
                        o.seconds = v
                            .parse::<f64>()
                            .ok()
                            .filter(|s| s.is_finite() && *s > 0.0)
                            .ok_or(format!("--seconds: {v:?} is not a positive number"))?;
                    }
                    "--quota" => {
                        o.quota = u32::try_from(count(&arg, &value()?)?)
                            .map_err(|_| "--quota: too large".to_owned())?
                    }
                    other => return Err(format!("unknown argument {other:?}")),
                }
            }
            Ok(o)
        }
    }

    const FLOOD_KEY: &str = "flood-key";
    const CALM_KEY: &str = "calm-key";
    const FLOOD_CONNECTIONS: usize = 8;
    const OVERHEAD_CONNECTIONS: usize = 4;
    const OVERHEAD_REQUESTS: usize = 20_000;

    fn org_body(id: &str) -> Bytes {
        Bytes::from(
            json!({
                "schemas": ["urn:scim:schemas:extension:sis:school:1.0:Organisation"],
                "externalId": id,
                "displayName": "Kommunen",
            })
            .to_string(),
        )
    }

    fn runtime_config(data_dir: &Path, quota: u32) -> config::Runtime {
        let toml = format!(
            "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nworkers = {SERVER_WORKERS}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [rate_limits]\nwrites = {{ requests = {quota} }}\nreads = {{ requests = 1000000 }}\n\
             [[tenants]]\nid = \"flood\"\nname = \"Flooding\"\napi_keys = [\"{}\"]\n\
             [[tenants]]\nid = \"calm\"\nname = \"Calm\"\napi_keys = [\"{}\"]\n",
            data_dir.join("store").display(),
            skolgrind::auth::api_key::hash_for_config(FLOOD_KEY),
            skolgrind::auth::api_key::hash_for_config(CALM_KEY),
        );
        let file = data_dir.join("flood.toml");
        std::fs::write(&file, toml).unwrap();
        config::load_file(&file).unwrap()
    }

    /// What one tenant's senders observed.
    #[derive(Default)]
    struct Seen {
        latencies: Vec<Duration>,
        ok: usize,
        limited: usize,
        other: usize,
    }

    impl Seen {
        fn absorb(&mut self, o: Seen) {
            self.latencies.extend(o.latencies);
            self.ok += o.ok;
            self.limited += o.limited;
            self.other += o.other;
        }

        fn line(&mut self, elapsed: Duration) -> String {
            self.latencies.sort_unstable();
            let s = elapsed.as_secs_f64();
            format!(
                "{:>6.0} req/s answered, {:>5.0} ok/s, {:>6.0} 429/s, other {}  p50 {:.2} ms  p99 {:.2} ms",
                self.latencies.len() as f64 / s,
                self.ok as f64 / s,
                self.limited as f64 / s,
                self.other,
                percentile(&self.latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&self.latencies, 0.99).as_secs_f64() * 1e3,
            )
        }
    }

    /// Sends `rate` PUTs per second over `connections` connections for `duration`.
    async fn paced(
        url: String,
        key: &'static str,
        body: Bytes,
        rate: f64,
        connections: usize,
        duration: Duration,
    ) -> Seen {
        let stop = Instant::now() + duration;
        let period = Duration::from_secs_f64(connections as f64 / rate);
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (url, body) = (url.clone(), body.clone());
            let client = reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .build()
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while Instant::now() < stop {
                    tick.tick().await;
                    let start = Instant::now();
                    let res = client
                        .put(&url)
                        .header("content-type", "application/scim+json")
                        .header("x-api-key", key)
                        .body(body.clone())
                        .send()
                        .await;
                    let status = match res {
                        Ok(r) => {
                            let st = r.status().as_u16();
                            let _ = r.bytes().await;
                            st
                        }
                        Err(_) => 0,
                    };
                    seen.latencies.push(start.elapsed());
                    match status {
                        200 | 201 => seen.ok += 1,
                        429 => seen.limited += 1,
                        _ => seen.other += 1,
                    }
                }
                seen
            }));
        }
        let mut all = Seen::default();
        for t in tasks {
            all.absorb(t.await.unwrap());
        }
        all
    }

    /// `n` authenticated GETs over `connections` connections as fast as they go.
    async fn hammer(url: String, n: usize, connections: usize) -> (Vec<Duration>, Duration) {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (url, next) = (url.clone(), next.clone());
            let client = reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .build()
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let r = client
                        .get(&url)
                        .header("x-api-key", CALM_KEY)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        (all, start.elapsed())
    }

    fn serve_app(state: Arc<skolgrind::http::AppState>, full: bool) -> Running {
        use actix_web::middleware::{from_fn, NormalizePath, TrailingSlash};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = if full {
            HttpServer::new(move || {
                App::new()
                    .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
                    .wrap(from_fn(skolgrind::http::guard::middleware))
                    .wrap(from_fn(skolgrind::http::access_log::middleware))
                    .configure(skolgrind::http::configure(state.clone()))
            })
            .workers(SERVER_WORKERS)
            .listen(listener)
            .unwrap()
            .run()
        } else {
            HttpServer::new(move || {
                App::new()
                    .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
                    .wrap(from_fn(skolgrind::http::access_log::middleware))
                    .configure(skolgrind::http::configure(state.clone()))
            })
            .workers(SERVER_WORKERS)
            .listen(listener)
            .unwrap()
            .run()
        };
        Running::start(server, addr)
    }

    pub fn run(o: &Options) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = runtime_config(dir.path(), o.quota);
        let state = skolgrind::app::build_state(&cfg).unwrap();
        let (server, addr) = skolgrind::app::bind(&cfg, state.clone()).unwrap();
        let server = Running::start(server, addr);
        let duration = Duration::from_secs_f64(o.seconds);
        let quota = f64::from(o.quota);
        let calm_url = format!("{}/egil/Organisations", server.base);
        let calm_body = org_body("0c4f6a56-8f2e-4a8e-9b51-5f3c1b8e0a01");
        let flood_body = org_body("7d1e2b7c-3a4f-4c6d-8e9f-0a1b2c3d4e5f");

        println!(
            "flood: write quota {} per second per tenant; {:.0} s per phase",
            o.quota, o.seconds
        );
        let mut alone = rt.block_on(paced(
            calm_url.clone(),
            CALM_KEY,
            calm_body.clone(),
            quota / 2.0,
            1,
            duration,
        ));
        // Let the quota refill before the next phase.
        std::thread::sleep(Duration::from_secs(1));
        let (mut calm, mut flood) = rt.block_on(async {
            let flood = tokio::spawn(paced(
                calm_url.clone(),
                FLOOD_KEY,
                flood_body,
                quota * 10.0,
                FLOOD_CONNECTIONS,
                duration,
            ));
            let calm = paced(
                calm_url.clone(),
                CALM_KEY,
                calm_body,
                quota / 2.0,
                1,
                duration,
            )
            .await;
            (calm, flood.await.unwrap())
        });
        let calm_alone_p99 = {
            alone.latencies.sort_unstable();
            percentile(&alone.latencies, 0.99)
        };
        println!(
            "  calm alone     (0.5× quota, 1 conn) : {}",
            alone.line(duration)
        );
        println!(
            "  calm with flood(0.5× quota, 1 conn) : {}",
            calm.line(duration)
        );
        println!(
            "  flood          (10× quota, {FLOOD_CONNECTIONS} conns): {}",
            flood.line(duration)
        );
        let calm_p99 = percentile(&calm.latencies, 0.99);
        println!(
            "  calm p99 with flood / alone: {:.2}  (calm 429s: {})",
            calm_p99.as_secs_f64() / calm_alone_p99.as_secs_f64(),
            calm.limited
        );
        server.stop(&rt);

        // Middleware overhead: the same GET on the same state, with and without the
        // rate-limit + metrics middleware (the per-tenant limiter check inside
        // authentication runs in both).
        let id = "0c4f6a56-8f2e-4a8e-9b51-5f3c1b8e0a01";
        let mut figures = Vec::new();
        for full in [false, true, false, true] {
            let s = serve_app(state.clone(), full);
            let url = format!("{}/egil/Organisations/{id}", s.base);
            let (lat, elapsed) = rt.block_on(hammer(url, OVERHEAD_REQUESTS, OVERHEAD_CONNECTIONS));
            s.stop(&rt);
            figures.push((
                full,
                lat.len() as f64 / elapsed.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
            ));
        }
        println!(
            "middleware overhead: GET /egil/Organisations/{{id}}, {} requests x {} conns, two alternating runs each",
            grouped(OVERHEAD_REQUESTS),
            OVERHEAD_CONNECTIONS
        );
        let mean = |full: bool| {
            let v: Vec<_> = figures.iter().filter(|f| f.0 == full).collect();
            let n = v.len() as f64;
            (
                v.iter().map(|f| f.1).sum::<f64>() / n,
                v.iter().map(|f| f.2.as_secs_f64()).sum::<f64>() / n,
                v.iter().map(|f| f.3.as_secs_f64()).sum::<f64>() / n,
            )
        };
        let (bare, full) = (mean(false), mean(true));
        for (name, f) in [("bare handlers", bare), ("with guard   ", full)] {
            println!(
                "  {name}: {} req/s  p50 {:.3} ms  p99 {:.3} ms",
                grouped(f.0.round() as usize),
                f.1 * 1e3,
                f.2 * 1e3
            );
        }
        println!("  ratio        : {:.3} x bare throughput", full.0 / bare.0);

        // In-process cost of the two pieces per call.
        let t = skolgrind::domain::TenantId::parse("calm").unwrap();
        let n = 1_000_000u32;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                state
                    .ops
                    .tenants
                    .check(&t, skolgrind::ops::ratelimit::Class::Read),
            );
        }
        let check = start.elapsed() / n;
        let start = Instant::now();
        for _ in 0..n {
            skolgrind::ops::metrics::request("calm", "egil_scim", "/egil/{type}/{id}", 200, 0.001);
        }
        let record = start.elapsed() / n;
        println!(
            "  per call     : limiter check {} ns, request metrics {} ns",
            check.as_nanos(),
            record.as_nanos()
        );
    }
}

// ---------------------------------------------------------------------------------------
// The ss12000 scenario: SS12000:2020 bulk jobs
// ---------------------------------------------------------------------------------------

/// `ss12000`: bulk push of persons to `/provisioning/v1/persons/bulk` in jobs, measuring
/// the accept latency (202, job durable), the time until a job is completed, and the
/// end-to-end time until every job is completed; the baseline is an empty actix handler
/// answering 202 to the same bodies.
mod ss12000 {
    use super::*;

    struct Opts {
        persons: usize,
        job_size: usize,
        connections: usize,
    }

    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            persons: 100_000,
            job_size: 1_000,
            connections: 4,
        };
        let mut quick = false;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "ss12000" | "--bench" => {}
                "--quick" => quick = true,
                "--persons" => o.persons = count(arg, &value()?)?,
                "--job-size" => o.job_size = count(arg, &value()?)?,
                "--connections" => o.connections = count(arg, &value()?)?,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if quick {
            o.persons = (o.persons / QUICK_DIVISOR).max(o.job_size);
        }
        Ok(o)
    }

    fn person(i: usize) -> Value {
        json!({
            "id": Uuid::from_u128(0x5500_0000_0000_4000_8000_0000_0000_0000 | i as u128).to_string(),
            "givenName": format!("Förnamn{i}"),
            "familyName": "Efternamn",
            "eduPersonPrincipalNames": [format!("p{i:07}q@edu.bench.example")],
            "civicNo": {"value": civic_no(2008, 10, i), "nationality": "SE"},
            "emails": [{"value": format!("p{i}@elev.bench.example"), "type": "Skola elev"}],
        })
    }

    fn bodies(from: usize, n: usize, job_size: usize) -> Vec<Bytes> {
        (from..from + n)
            .collect::<Vec<_>>()
            .chunks(job_size)
            .map(|c| {
                Bytes::from(
                    json!({"data": c.iter().map(|i| person(*i)).collect::<Vec<_>>()}).to_string(),
                )
            })
            .collect()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// POSTs one job; returns the accept latency and the job's status URL.
    async fn submit(
        c: &reqwest::Client,
        base: &str,
        body: Bytes,
    ) -> Result<(Duration, String), String> {
        let start = Instant::now();
        let res = c
            .post(format!("{base}/provisioning/v1/persons/bulk"))
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let text = res.text().await.map_err(|e| e.to_string())?;
        let took = start.elapsed();
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(format!("{status}: {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let job = v["jobId"].as_str().unwrap_or_default();
        Ok((
            took,
            format!("{base}/provisioning/v1/persons/bulk/jobs/{job}"),
        ))
    }

    async fn completed(c: &reqwest::Client, job_url: &str) -> bool {
        let res = c
            .get(format!("{job_url}/isCompleted"))
            .header("x-api-key", API_KEY)
            .send()
            .await;
        match res {
            Ok(r) => r.text().await.map(|t| t == "true").unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Counts the items of a completed job that did not succeed.
    async fn failed_items(c: &reqwest::Client, job_url: &str) -> usize {
        let v: Value = c
            .get(format!("{job_url}?showOnlyError=true"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["responses"].as_array().map_or(usize::MAX, Vec::len)
    }

    /// Sends all bodies with `connections` workers; returns accept latencies, job URLs,
    /// failures and the time until every job was accepted.
    async fn push_all(
        base: &str,
        bodies: Arc<Vec<Bytes>>,
        connections: usize,
    ) -> (Vec<Duration>, Vec<String>, Vec<String>, Duration) {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (bodies, next, base, c) =
                    (bodies.clone(), next.clone(), base.to_owned(), client());
                tokio::spawn(async move {
                    let mut out = (Vec::new(), Vec::new(), Vec::new());
                    while let Some(b) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                        match submit(&c, &base, b.clone()).await {
                            Ok((t, url)) => {
                                out.0.push(t);
                                out.1.push(url);
                            }
                            Err(e) => out.2.push(e),
                        }
                    }
                    out
                })
            })
            .collect();
        let (mut lat, mut urls, mut errs) = (Vec::new(), Vec::new(), Vec::new());
        for w in workers {
            let (l, u, e) = w.await.unwrap();
            lat.extend(l);
            urls.extend(u);
            errs.extend(e);
        }
        (lat, urls, errs, start.elapsed())
    }

    fn baseline() -> Running {
        async fn accepted(_body: Bytes) -> HttpResponse {
            HttpResponse::Accepted()
                .content_type("application/json")
                .body(r#"{"jobId":"00000000-0000-4000-8000-000000000000","message":"ok"}"#)
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(64 << 20))
                .route("/provisioning/v1/persons/bulk", web::post().to(accepted))
        })
        .workers(SERVER_WORKERS)
        .listen_auto_h2c(listener)
        .unwrap()
        .run();
        Running::start(server, addr)
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    pub fn main(args: &[String]) {
        let o = parse(args).unwrap_or_else(|e| {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2)
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let single = bodies(10_000_000, o.job_size, o.job_size);
        let all = Arc::new(bodies(0, o.persons, o.job_size));
        println!(
            "ss12000 push: {} persons in {} jobs of {} ({:.1} MB of JSON), {} connection(s)",
            grouped(o.persons),
            grouped(all.len()),
            grouped(o.job_size),
            all.iter().map(Bytes::len).sum::<usize>() as f64 / 1e6,
            o.connections
        );
        let data = tempfile::tempdir().unwrap();
        let server = Running::skolgrind(data.path());
        let base = server.base.clone();
        // One job alone: accepted, then processed (polled every 2 ms).
        let (single_accept, single_done, single_failed) = rt.block_on(async {
            let c = client();
            let start = Instant::now();
            let (acc, url) = submit(&c, &base, single[0].clone()).await.unwrap();
            while !completed(&c, &url).await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let done = start.elapsed();
            (acc, done, failed_items(&c, &url).await)
        });
        println!(
            "  one {}-person job alone: accepted in {:.1} ms, completed {:.1} ms after submission; {} item(s) failed",
            o.job_size,
            ms(single_accept),
            ms(single_done),
            single_failed
        );
        // The bulk push.
        let (mut lat, urls, errs, accept_time, e2e, failed) = rt.block_on(async {
            let start = Instant::now();
            let (lat, urls, errs, accept_time) = push_all(&base, all.clone(), o.connections).await;
            let c = client();
            for u in &urls {
                while !completed(&c, u).await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let e2e = start.elapsed();
            let mut failed = 0;
            for u in &urls {
                failed += failed_items(&c, u).await;
            }
            (lat, urls, errs, accept_time, e2e, failed)
        });
        server.stop(&rt);
        drop(data);
        lat.sort_unstable();
        let items = urls.len() * o.job_size;
        println!(
            "  skolgrind: {} jobs accepted in {:.1} s ({:.1} jobs/s); accept p50 {:.1} ms  p99 {:.1} ms",
            grouped(urls.len()),
            accept_time.as_secs_f64(),
            urls.len() as f64 / accept_time.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
        println!(
            "             all jobs completed after {:.1} s: {} items processed/s; {} item(s) failed, {} request(s) refused{}",
            e2e.as_secs_f64(),
            grouped((items as f64 / e2e.as_secs_f64()).round() as usize),
            grouped(failed),
            grouped(errs.len()),
            errs.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        let server = baseline();
        let (mut bl, bl_urls, bl_errs, bl_time) =
            rt.block_on(push_all(&server.base, all.clone(), o.connections));
        server.stop(&rt);
        bl.sort_unstable();
        println!(
            "  baseline : {} requests in {:.2} s ({:.1} req/s); p50 {:.1} ms  p99 {:.1} ms  (empty actix handler answering 202{})",
            grouped(bl_urls.len()),
            bl_time.as_secs_f64(),
            bl_urls.len() as f64 / bl_time.as_secs_f64(),
            ms(percentile(&bl, 0.5)),
            ms(percentile(&bl, 0.99)),
            if bl_errs.is_empty() { String::new() } else { format!("; {} refused", bl_errs.len()) }
        );
        println!(
            "  ratio    : accept throughput {:.2} x baseline; end-to-end (durable, processed) throughput {:.3} x baseline",
            (urls.len() as f64 / accept_time.as_secs_f64()) / (bl_urls.len() as f64 / bl_time.as_secs_f64()),
            (urls.len() as f64 / e2e.as_secs_f64()) / (bl_urls.len() as f64 / bl_time.as_secs_f64()),
        );
    }
}

/// The login storm: N persons across T tenants are loaded straight into a store of the
/// chosen engine (sled unless `--engine redb`) through `Store::write`, the same path and
/// indexes as provisioning, waiting for durability once per chunk. The store files are
/// read once into the OS page cache (unless `--cold`), then a server process opens the
/// store with the engine's default caches (unless `--cache-mb`/`--model-cache-mb`),
/// warms its read cache as `skolgrind serve` does at start (unless `--no-warm-up`), and
/// 64 connections resolve random EPPNs through `POST /login/v1/resolve` for a fixed time.
/// The same clients then send the same request to a hello-world actix handler for the
/// same time; the ratio compares the two (`--rounds N` alternates them N times). RSS is
/// the server process's, from `/proc/{pid}/status`.
mod login_storm {
    use super::*;
    use skolgrind::domain::model::{
        Activity, Duty, Enrolment, Entity, Group, Meta, OrgType, OrgUnit, Person,
    };
    use skolgrind::domain::{
        LoginBinding, Product, ProductId, Protocol, StoredObject, Tenant, TenantId,
    };
    use skolgrind::store::{Decision, Store, WriteEvent};

    const USAGE: &str = "usage: cargo bench --bench skolgrind-bench -- login [--persons N] \
[--tenants N] [--connections N] [--seconds S] [--rounds N] [--cold] [--no-warm-up] [--cache-mb M] [--model-cache-mb M] [--engine sled|redb] \
[--data DIR] [--quick]";
    const PRODUCT_KEY: &str = "bench-product-key";
    const CHUNK: usize = 20_000;

    struct Opts {
        persons: usize,
        tenants: usize,
        connections: usize,
        seconds: f64,
        /// Storms per server, alternating skolgrind and the baseline.
        rounds: usize,
        /// Do not read the store files into the OS page cache before serving.
        cold: bool,
        /// Start the storm without the server's read-cache warm-up.
        no_warm_up: bool,
        cache_mb: u64,
        model_cache_mb: u64,
        engine: skolgrind::store::StoreEngine,
        /// Internal: run as the server process on this loaded store.
        serve: Option<std::path::PathBuf>,
        /// Load into this directory and keep it; a directory already loaded with the
        /// same persons, tenants and engine is reused without loading again.
        data: Option<std::path::PathBuf>,
    }

    fn parse() -> Result<Opts, String> {
        let mut o = Opts {
            persons: 1_000_000,
            tenants: 50,
            connections: 64,
            seconds: 10.0,
            rounds: 1,
            cold: false,
            no_warm_up: false,
            // 0 until parsed: then the engine's defaults unless given.
            cache_mb: 0,
            model_cache_mb: 0,
            engine: skolgrind::store::StoreEngine::Sled,
            serve: None,
            data: None,
        };
        let mut quick = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "login" | "--bench" => {}
                "--quick" => quick = true,
                "--persons" => o.persons = count(&arg, &value()?)?,
                "--tenants" => o.tenants = count(&arg, &value()?)?,
                "--connections" => o.connections = count(&arg, &value()?)?,
                "--rounds" => o.rounds = count(&arg, &value()?)?,
                "--cold" => o.cold = true,
                "--no-warm-up" => o.no_warm_up = true,
                "--cache-mb" => o.cache_mb = count(&arg, &value()?)? as u64,
                "--model-cache-mb" => o.model_cache_mb = count(&arg, &value()?)? as u64,
                "--serve" => o.serve = Some(value()?.into()),
                "--data" => o.data = Some(value()?.into()),
                "--engine" => {
                    o.engine = match value()?.as_str() {
                        "sled" => skolgrind::store::StoreEngine::Sled,
                        "redb" => skolgrind::store::StoreEngine::Redb,
                        other => return Err(format!("--engine: {other:?} is not sled or redb")),
                    }
                }
                "--seconds" => {
                    let v = value()?;
                    o.seconds = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or(format!("{arg}: {v:?} is not a positive number"))?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if quick {
            o.persons = (o.persons / QUICK_DIVISOR).max(o.tenants);
            o.seconds = o.seconds.min(5.0);
        }
        // The server's own defaults for the engine, unless given.
        const MIB: u64 = 1024 * 1024;
        if o.cache_mb == 0 {
            o.cache_mb = o.engine.default_cache_bytes() / MIB;
        }
        if o.model_cache_mb == 0 {
            o.model_cache_mb = o.engine.default_model_cache_bytes() / MIB;
        }
        Ok(o)
    }

    fn tenant_id(t: usize) -> TenantId {
        TenantId::parse(&format!("t{t:02}")).unwrap()
    }

    fn eppn(t: usize, i: usize) -> String {
        format!("p{i}@t{t:02}.bench.example")
    }

    fn id(kind: u8, i: usize) -> String {
        Uuid::from_u128((u128::from(kind) << 96) | (0x4000 << 64) | (0x8000 << 48) | i as u128)
            .hyphenated()
            .to_string()
    }

    /// RSS and peak RSS of this process in MB.
    fn rss_mb() -> (f64, f64) {
        rss_of(std::process::id())
    }

    /// Loads one tenant: school units, pupils (90 %) in groups of 25 with one activity
    /// per group (every tenth with a parent activity), staff with one teaching duty each.
    fn load_tenant(store: &dyn Store, t: usize, persons: usize) -> usize {
        let tenant = tenant_id(t);
        let now = chrono::Utc::now();
        let ev = WriteEvent {
            protocol: Protocol::EgilScim,
            credential: "bench".into(),
            at: now,
        };
        let mut written = 0usize;
        let mut last = None;
        let mut put = |oid: String, entity: Entity, raw: String| {
            let kind = entity.kind();
            let mut obj = Some(StoredObject {
                tenant: tenant.clone(),
                id: oid.clone(),
                entity,
                meta: Meta {
                    created: now,
                    last_modified: now,
                    version: 1,
                    protocol: Protocol::EgilScim,
                    credential: "bench".into(),
                },
                raw,
                flags: vec![],
            });
            let c = store
                .write(&tenant, kind, &oid, &ev, &mut |_| {
                    Ok(Decision::Put(Box::new(obj.take().unwrap())))
                })
                .unwrap();
            written += 1;
            if written.is_multiple_of(CHUNK) {
                futures_block_on(c.durable);
            } else {
                last = Some(c.durable);
            }
        };
        let pupils = persons * 9 / 10;
        let staff = persons - pupils;
        let units = (pupils / PUPILS_PER_SCHOOL_UNIT).max(1);
        for u in 0..units {
            let raw = format!(
                r#"{{"externalId":"{}","displayName":"Skola {u}","schoolUnitCode":"{:08}"}}"#,
                id(3, u),
                10_000_000 + u
            );
            put(
                id(3, u),
                Entity::OrgUnit(OrgUnit {
                    org_type: OrgType::SchoolUnit,
                    display_name: format!("Skola {u}"),
                    school_unit_code: Some(format!("{:08}", 10_000_000 + u)),
                    municipality_code: None,
                    parent: None,
                    organisation: None,
                    school_types: vec!["GR".into()],
                }),
                raw,
            );
        }
        for i in 0..persons {
            let pupil = i < pupils;
            let e = eppn(t, i);
            let unit = if pupil {
                i * units / pupils.max(1)
            } else {
                i % units
            };
            let raw = format!(
                r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:scim:schemas:extension:sis:school:1.0:User"],"externalId":"{}","userName":"{e}","displayName":"Person {i}","name":{{"familyName":"Efternamn","givenName":"Person"}},"emails":[{{"value":"{e}"}}],"urn:scim:schemas:extension:sis:school:1.0:User":{{"enrolments":[{{"value":"{}","schoolYear":6,"schoolType":"GR"}}]}}}}"#,
                id(4, i),
                id(3, unit)
            );
            put(
                id(4, i),
                Entity::Person(Person {
                    given_name: Some("Person".into()),
                    family_name: Some("Efternamn".into()),
                    display_name: Some(format!("Person {i}")),
                    eppns: vec![e.clone()],
                    civic_no: None,
                    emails: vec![skolgrind::domain::model::Email {
                        value: e,
                        kind: None,
                    }],
                    security_marking: None,
                    external_identifiers: vec![],
                    enrolments: if pupil {
                        vec![Enrolment {
                            school_unit: id(3, unit),
                            school_type: Some("GR".into()),
                            school_year: Some(6),
                            program_code: None,
                        }]
                    } else {
                        vec![]
                    },
                    relations: vec![],
                }),
                raw,
            );
        }
        for d in 0..staff {
            put(
                id(5, d),
                Entity::Duty(Duty {
                    person: Some(id(4, pupils + d)),
                    school_unit: id(3, d % units),
                    role: "Lärare".into(),
                    signature: None,
                }),
                format!(
                    r#"{{"externalId":"{}","employmentRole":"Lärare"}}"#,
                    id(5, d)
                ),
            );
        }
        let groups = pupils.div_ceil(GROUP_SIZE);
        for g in 0..groups {
            let members: Vec<String> = (g * GROUP_SIZE..((g + 1) * GROUP_SIZE).min(pupils))
                .map(|p| id(4, p))
                .collect();
            put(
                id(6, g),
                Entity::Group(Group {
                    display_name: format!("Grupp {g}"),
                    group_type: Some("Undervisning".into()),
                    school_type: Some("GR".into()),
                    owner: id(3, g * GROUP_SIZE * units / pupils.max(1)),
                    members,
                }),
                format!(
                    r#"{{"externalId":"{}","displayName":"Grupp {g}"}}"#,
                    id(6, g)
                ),
            );
            put(
                id(7, g),
                Entity::Activity(Activity {
                    display_name: format!("Grupp {g}-Activity"),
                    activity_type: None,
                    owner: id(3, g * GROUP_SIZE * units / pupils.max(1)),
                    groups: vec![id(6, g)],
                    teachers: if staff > 0 {
                        vec![id(5, g % staff)]
                    } else {
                        vec![]
                    },
                    parent_activities: if g % 10 == 9 {
                        vec!["b229977a-7bd3-58ad-b7a2-3fdc774840fd".into()]
                    } else {
                        vec![]
                    },
                }),
                format!(
                    r#"{{"externalId":"{}","displayName":"Grupp {g}-Activity"}}"#,
                    id(7, g)
                ),
            );
        }
        if let Some(d) = last {
            futures_block_on(d);
        }
        written
    }

    fn futures_block_on(d: skolgrind::store::Durable) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(d.wait())
            .unwrap();
    }

    fn runtime_config(data: &Path, tenants: usize) -> skolgrind::config::Runtime {
        let mut cfg = config::load_defaults(API_KEY).unwrap();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.data_dir = data.to_path_buf();
        cfg.workers = Some(SERVER_WORKERS);
        cfg.tenants = (0..tenants)
            .map(|t| {
                Arc::new(Tenant {
                    id: tenant_id(t),
                    name: format!("Kommun {t}"),
                    organisation_number: None,
                    eppn_scopes: vec![format!("t{t:02}.bench.example")],
                    civic_no_policy: skolgrind::domain::CivicNoPolicy::Warn,
                    ss12000_profile: Default::default(),
                })
            })
            .collect();
        // The storm measures the read path, not the product's quota.
        cfg.ops.product_lookups = skolgrind::ops::config::Quota {
            requests: 1_000_000,
            per: Duration::from_secs(1),
        };
        cfg.login_bindings = (0..tenants)
            .map(|t| {
                (
                    tenant_id(t),
                    LoginBinding {
                        idp_entity_ids: vec![format!("https://idp.t{t:02}.example")],
                        civic_no_second_factor: false,
                    },
                )
            })
            .collect();
        let product = ProductId::parse("bench").unwrap();
        cfg.products = vec![Arc::new(Product {
            id: product.clone(),
            name: "Bench".into(),
        })];
        cfg.api_keys = vec![skolgrind::auth::api_key::ApiKey {
            owner: skolgrind::auth::api_key::KeyOwner::Product(product),
            hash: skolgrind::auth::api_key::parse_hash(&skolgrind::auth::api_key::hash_for_config(
                PRODUCT_KEY,
            ))
            .unwrap(),
            label: "1".into(),
            expires: None,
        }];
        cfg
    }

    /// A hello-world actix server (same workers) answering the same POST with `{}`.
    fn baseline() -> Running {
        async fn hello(_body: Bytes) -> HttpResponse {
            HttpResponse::Ok()
                .content_type("application/json")
                .body("{}")
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            HttpServer::new(|| App::new().route("/login/v1/resolve", web::post().to(hello)))
                .workers(SERVER_WORKERS)
                .listen_auto_h2c(listener)
                .unwrap()
                .run();
        Running::start(server, addr)
    }

    struct StormTally {
        latencies: Vec<Duration>,
        failures: usize,
        first_failure: Option<String>,
    }

    async fn storm_worker(
        client: reqwest::Client,
        url: String,
        tenants: usize,
        per_tenant: usize,
        check: bool,
        stop: Instant,
        seed: u64,
    ) -> StormTally {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut tally = StormTally {
            latencies: Vec::with_capacity(1 << 16),
            failures: 0,
            first_failure: None,
        };
        while Instant::now() < stop {
            let t = rng.random_range(0..tenants);
            let i = rng.random_range(0..per_tenant);
            let body = format!(
                r#"{{"eppn":"{}","idp_entity_id":"https://idp.t{t:02}.example"}}"#,
                eppn(t, i).to_uppercase()
            );
            let start = Instant::now();
            let res = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-api-key", PRODUCT_KEY)
                .body(body)
                .send()
                .await;
            let answer = match res {
                Ok(r) => {
                    let st = r.status();
                    r.text().await.map(|b| (st, b))
                }
                Err(e) => Err(e),
            };
            tally.latencies.push(start.elapsed());
            let ok = match &answer {
                Ok((st, b)) => {
                    *st == reqwest::StatusCode::OK
                        && (!check || b.contains(&format!(r#""tenant_id":"t{t:02}""#)))
                }
                Err(_) => false,
            };
            if !ok {
                tally.failures += 1;
                if tally.first_failure.is_none() {
                    tally.first_failure = Some(match answer {
                        Ok((st, b)) => format!("{st}: {}", b.chars().take(200).collect::<String>()),
                        Err(e) => e.to_string(),
                    });
                }
            }
        }
        tally
    }

    fn storm(
        rt: &Runtime,
        base: &str,
        o: &Opts,
        per_tenant: usize,
        check: bool,
    ) -> (Vec<Duration>, usize, Option<String>, Duration) {
        let url = format!("{base}/login/v1/resolve");
        let start = Instant::now();
        let stop = start + Duration::from_secs_f64(o.seconds);
        let (mut lat, mut fails, mut first) = (Vec::new(), 0, None);
        rt.block_on(async {
            let workers: Vec<_> = (0..o.connections)
                .map(|w| {
                    let client = reqwest::Client::builder()
                        .http1_only()
                        .pool_max_idle_per_host(1)
                        .no_proxy()
                        .build()
                        .unwrap();
                    tokio::spawn(storm_worker(
                        client,
                        url.clone(),
                        o.tenants,
                        per_tenant,
                        check,
                        stop,
                        w as u64 + 1,
                    ))
                })
                .collect();
            for w in workers {
                let t = w.await.unwrap();
                lat.extend(t.latencies);
                fails += t.failures;
                if first.is_none() {
                    first = t.first_failure;
                }
            }
        });
        lat.sort_unstable();
        (lat, fails, first, start.elapsed())
    }

    /// RSS and peak RSS of a process in MB.
    fn rss_of(pid: u32) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The server side, run in its own process (`--serve DIR`): opens the loaded store
    /// with the configured caches, times resolves in-process, serves, prints its address
    /// and runs until its stdin closes.
    fn serve(o: &Opts, dir: &Path) {
        let per_tenant = o.persons / o.tenants;
        let store = skolgrind::store::open(
            o.engine,
            dir,
            o.cache_mb * 1024 * 1024,
            o.model_cache_mb * 1024 * 1024,
        )
        .unwrap();
        let (rss_open, _) = rss_mb();
        println!(
            "  server process: opened with {} cache {} MB, model cache {} MB: RSS {rss_open:.0} MB",
            o.engine.as_str(),
            o.cache_mb,
            o.model_cache_mb
        );
        let cfg = runtime_config(dir, o.tenants);
        let state = skolgrind::app::state_with_store(&cfg, store).unwrap();
        // What `skolgrind serve` does on a thread of its own at start, here before the
        // storm: a server that has been up for that long.
        if !o.no_warm_up {
            let started = Instant::now();
            let tenants: Vec<_> = cfg.tenants.iter().map(|t| t.id.clone()).collect();
            skolgrind::app::warm_cache(&**state.provisioning.store(), &tenants);
            let (rss, _) = rss_mb();
            println!(
                "  read cache warmed at start in {:.1} s: RSS {rss:.0} MB",
                started.elapsed().as_secs_f64()
            );
        }
        // The domain's share: resolves called in-process on one thread, no HTTP.
        {
            use rand::{Rng, SeedableRng};
            let n = 20_000;
            // The same 20,000 lookups twice: first with persons not read yet, then again
            // with whatever the caches kept (the shared groups and activities, not
            // persons).
            let pass = || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(99);
                let start = Instant::now();
                for _ in 0..n {
                    let t = rng.random_range(0..o.tenants);
                    let q = skolgrind::domain::login::LoginQuery {
                        eppn: Some(eppn(t, rng.random_range(0..per_tenant))),
                        ..Default::default()
                    };
                    let r = state.login.resolve(&q).unwrap();
                    assert!(matches!(r, skolgrind::domain::login::Resolution::Found(_)));
                }
                (start.elapsed() / n).as_secs_f64() * 1e6
            };
            let (cold, again) = (pass(), pass());
            println!(
                "  in-process resolve (domain + store, one thread): {cold:.1} µs each cold, {again:.1} µs repeated"
            );
        }
        let (server, addr) = skolgrind::app::bind(&cfg, state).unwrap();
        let server = Running::start(server, addr);
        println!("serving {}", server.base);
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        std::process::exit(0);
    }

    pub fn main() {
        let o = parse().unwrap_or_else(|e| {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2)
        });
        if let Some(dir) = &o.serve {
            serve(&o, dir);
            return;
        }
        let per_tenant = o.persons / o.tenants;
        let temp = tempfile::tempdir().unwrap();
        let dir = o.data.clone().unwrap_or_else(|| temp.path().to_owned());
        // What a kept directory was loaded with; another load is refused, not mixed in.
        let marker = dir.join("bench-loaded");
        let loaded_as = format!("{} {} {}", o.persons, o.tenants, o.engine.as_str());
        match std::fs::read_to_string(&marker) {
            Ok(was) if was == loaded_as => {
                println!("login storm: reusing {} ({loaded_as})", dir.display())
            }
            Ok(was) => panic!("{} was loaded as {was:?}, not {loaded_as:?}", dir.display()),
            Err(_) => {
                let started = Instant::now();
                // The loader gets a larger page cache: loading is not what is measured.
                let store = skolgrind::store::open(
                    o.engine,
                    &dir,
                    o.cache_mb.max(256) * 1024 * 1024,
                    skolgrind::store::kv::DEFAULT_MODEL_CACHE_BYTES,
                )
                .unwrap();
                let mut objects = 0;
                for t in 0..o.tenants {
                    objects += load_tenant(&*store, t, per_tenant);
                }
                let load_time = started.elapsed();
                println!(
                    "login storm: {} persons across {} tenants ({} objects with groups, activities, duties, school units) loaded in {:.1} s ({} objects/s)",
                    grouped(per_tenant * o.tenants), o.tenants, grouped(objects), load_time.as_secs_f64(),
                    grouped((objects as f64 / load_time.as_secs_f64()) as usize)
                );
                // The server runs in its own process on the loaded store, as in the morning
                // after the night's provisioning: its RSS is the server's alone (no loader,
                // no clients).
                drop(store);
                std::fs::write(&marker, &loaded_as).unwrap();
            }
        }
        if !o.cold {
            // A server that has been running has its store files in the OS page cache
            // (which is not its RSS); one just loaded or copied may not, and its first
            // seconds then measure the disk. Read them through once, as that server would
            // have. `--cold` skips this.
            let started = Instant::now();
            let mut bytes = 0u64;
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                if entry.path().is_file() {
                    let mut f = std::fs::File::open(entry.path()).unwrap();
                    bytes += std::io::copy(&mut f, &mut std::io::sink()).unwrap();
                }
            }
            println!(
                "  store files read once into the OS page cache: {} MB in {:.1} s",
                bytes / (1024 * 1024),
                started.elapsed().as_secs_f64()
            );
        }
        let mut child = None;
        for _ in 0..100 {
            // sled's background threads may hold the directory lock for a moment.
            std::thread::sleep(Duration::from_millis(100));
            let mut c = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "login".to_owned(),
                    "--serve".into(),
                    dir.display().to_string(),
                    "--persons".into(),
                    o.persons.to_string(),
                    "--tenants".into(),
                    o.tenants.to_string(),
                    "--cache-mb".into(),
                    o.cache_mb.to_string(),
                    "--model-cache-mb".into(),
                    o.model_cache_mb.to_string(),
                    "--engine".into(),
                    o.engine.as_str().into(),
                ])
                .args(o.no_warm_up.then_some("--no-warm-up"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
            let mut base = None;
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut out, &mut line).unwrap_or(0) > 0 {
                if let Some(b) = line.trim().strip_prefix("serving ") {
                    base = Some(b.to_owned());
                    break;
                }
                print!("{line}");
                line.clear();
            }
            match base {
                Some(b) => {
                    child = Some((c, b));
                    break;
                }
                None => {
                    let _ = c.wait();
                }
            }
        }
        let (mut child, base) = child.expect("the server process did not start");
        let pid = child.id();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = baseline();
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  {} connections, {:.0} s each, random EPPNs in upper case with the tenant's IdP",
            o.connections, o.seconds
        );
        // Rounds alternate the two servers, so a slow spell of the machine shows in both.
        let mut ratios = Vec::new();
        let mut p99s = Vec::new();
        for round in 1..=o.rounds {
            if o.rounds > 1 {
                println!("  round {round} of {}", o.rounds);
            }
            let (sk, sk_fail, sk_first, sk_time) = storm(&rt, &base, &o, per_tenant, true);
            let (bl, bl_fail, bl_first, bl_time) = storm(&rt, &server.base, &o, per_tenant, false);
            let (skr, blr) = (rate(sk.len(), sk_time), rate(bl.len(), bl_time));
            println!(
                "  skolgrind: {} resolves/s  p50 {:.2} ms  p99 {:.2} ms  ({} resolves, each checked for the right tenant)",
                grouped(skr.round() as usize), ms(percentile(&sk, 0.5)), ms(percentile(&sk, 0.99)), grouped(sk.len())
            );
            if let Some(f) = sk_first {
                println!("  skolgrind: {} failed; first: {f}", grouped(sk_fail));
            }
            println!(
                "  baseline : {} req/s  p50 {:.2} ms  p99 {:.2} ms  (hello-world actix handler, same clients)",
                grouped(blr.round() as usize), ms(percentile(&bl, 0.5)), ms(percentile(&bl, 0.99))
            );
            if let Some(f) = bl_first {
                println!("  baseline : {} failed; first: {f}", grouped(bl_fail));
            }
            println!("  ratio    : {:.2} x baseline throughput", skr / blr);
            ratios.push(skr / blr);
            p99s.push(ms(percentile(&sk, 0.99)));
        }
        server.stop(&rt);
        let (rss, hwm) = rss_of(pid);
        drop(child.stdin.take());
        let _ = child.wait();
        if o.rounds > 1 {
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "  median of {} rounds: ratio {:.2} x baseline, skolgrind p99 {:.2} ms",
                o.rounds,
                median(&mut ratios),
                median(&mut p99s)
            );
        }
        println!(
            "  RSS      : {rss:.0} MB after the storm (peak {hwm:.0} MB), server process (store, caches, HTTP)"
        );
    }
}
