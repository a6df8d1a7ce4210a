//! Rate limits with governor (GCRA, monotonic clock: governor is built without its
//! `quanta` feature, so its default clock cannot go backwards).
//!
//! * Per tenant and call class (read/write): one keyed limiter per distinct quota, keyed by
//!   `(tenant, class)`, so per-tenant overrides need no limiter of their own.
//! * Per product (login API caller), one quota counted in lookups.
//! * Per client IP for unauthenticated traffic: calls without credentials and failed
//!   authentications draw from the IP's quota; an IP that exhausts it is refused before any
//!   authentication work until its quota has a cell again.
//!
//! Memory stays bounded: [`Limits::upkeep`] drops idle keys (`retain_recent`) and shrinks
//! the maps; it runs periodically.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;

use super::config::{OpsRuntime, Quota};
use crate::domain::TenantId;

/// Which quota a call draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    /// GET, HEAD and OPTIONS read; everything else writes.
    pub fn of_method(m: &str) -> Class {
        match m {
            "GET" | "HEAD" | "OPTIONS" => Class::Read,
            _ => Class::Write,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
        }
    }
}

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// The state of a quota after a call, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Calls allowed in one period (the burst size).
    pub limit: u32,
    /// Calls left now.
    pub remaining: u32,
    /// Time until the quota is whole again (an upper bound: exact to within one
    /// replenishment interval).
    pub reset: Duration,
    /// Set when the call was refused: whole seconds until one call is allowed again,
    /// rounded up.
    pub retry_after_secs: Option<u64>,
}

/// How long until a refused call would be allowed.
fn wait_of(n: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    n.wait_time_from(DefaultClock::default().now())
}

impl RateInfo {
    /// The state of `quota` after a check: the snapshot when allowed, the wait when not.
    fn of(quota: Quota, outcome: Result<governor::middleware::StateSnapshot, Duration>) -> Self {
        let limit = quota.requests;
        let interval = quota.per / limit;
        match outcome {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity().min(limit);
                RateInfo {
                    limit,
                    remaining,
                    reset: interval * (limit - remaining),
                    retry_after_secs: None,
                }
            }
            Err(wait) => RateInfo {
                limit,
                remaining: 0,
                reset: interval * limit,
                retry_after_secs: Some(ceil_secs(wait)),
            },
        }
    }

    /// `X-RateLimit-Reset` as decimal seconds (`30`, `0.2`), rounded up to milliseconds.
    pub fn reset_header(&self) -> String {
        let ms = self.reset.as_nanos().div_ceil(1_000_000);
        let (s, frac) = (ms / 1000, ms % 1000);
        if frac == 0 {
            s.to_string()
        } else {
            let f = format!("{frac:03}");
            format!("{s}.{}", f.trim_end_matches('0'))
        }
    }
}

fn governor_quota(q: Quota) -> Option<governor::Quota> {
    let n = NonZeroU32::new(q.requests)?;
    governor::Quota::with_period(q.per / q.requests).map(|g| g.allow_burst(n))
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s.max(1)
    }
}

struct Group {
    quota: Quota,
    limiter: Keyed<(TenantId, Class)>,
}

pub struct TenantLimits {
    groups: Vec<Group>,
    /// Index into `groups` for (tenant, class) pairs with an override.
    overrides: HashMap<(TenantId, Class), usize>,
    default_write: usize,
    default_read: usize,
}

impl TenantLimits {
    pub fn new(rt: &OpsRuntime) -> Result<Self, String> {
        let mut groups: Vec<Group> = Vec::new();
        let mut index_of = |q: Quota| -> Result<usize, String> {
            if let Some(i) = groups.iter().position(|g| g.quota == q) {
                return Ok(i);
            }
            let gq =
                governor_quota(q).ok_or("rate_limits: a quota must allow at least one call")?;
            groups.push(Group {
                quota: q,
                limiter: RateLimiter::dashmap(gq).with_middleware::<StateInformationMiddleware>(),
            });
            Ok(groups.len() - 1)
        };
        let default_write = index_of(rt.writes)?;
        let default_read = index_of(rt.reads)?;
        let mut overrides = HashMap::new();
        for (t, (w, r)) in &rt.tenant_quotas {
            if let Some(w) = w {
                overrides.insert((t.clone(), Class::Write), index_of(*w)?);
            }
            if let Some(r) = r {
                overrides.insert((t.clone(), Class::Read), index_of(*r)?);
            }
        }
        Ok(Self {
            groups,
            overrides,
            default_write,
            default_read,
        })
    }

    /// Takes one call from the tenant's quota of this class.
    pub fn check(&self, tenant: &TenantId, class: Class) -> RateInfo {
        let key = (tenant.clone(), class);
        let i = self.overrides.get(&key).copied().unwrap_or(match class {
            Class::Write => self.default_write,
            Class::Read => self.default_read,
        });
        let Some(g) = self.groups.get(i) else {
            // Unreachable by construction; never limit on an internal inconsistency.
            return RateInfo {
                limit: 0,
                remaining: 0,
                reset: Duration::ZERO,
                retry_after_secs: None,
            };
        };
        RateInfo::of(g.quota, g.limiter.check_key(&key).map_err(|n| wait_of(&n)))
    }

    pub fn upkeep(&self) -> usize {
        let mut n = 0;
        for g in &self.groups {
            g.limiter.retain_recent();
            g.limiter.shrink_to_fit();
            n += g.limiter.len();
        }
        n
    }
}

/// The per-product limiter of the login API, counted in lookups.
pub struct ProductLimits {
    quota: Quota,
    limiter: Keyed<String>,
}

impl ProductLimits {
    pub fn new(q: Quota) -> Result<Self, String> {
        let gq = governor_quota(q).ok_or("rate_limits.product_lookups: empty quota")?;
        Ok(Self {
            quota: q,
            limiter: RateLimiter::dashmap(gq).with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Takes `n` lookups (at least one) from the product's quota.
    pub fn check(&self, product: &str, n: u32) -> RateInfo {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let outcome = match self.limiter.check_key_n(&product.to_owned(), n) {
            Ok(r) => r.map_err(|n| wait_of(&n)),
            // More lookups at once than the whole quota: never possible.
            Err(_) => Err(self.quota.per),
        };
        RateInfo::of(self.quota, outcome)
    }

    pub fn upkeep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}

/// The per-IP limiter for unauthenticated traffic.
pub struct IpLimits {
    limiter: Keyed<IpAddr>,
    /// IPs that exhausted their quota, and until when they are refused outright.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl IpLimits {
    pub fn new(q: Quota) -> Result<Self, String> {
        let gq = governor_quota(q).ok_or("rate_limits.unauthenticated_per_ip: empty quota")?;
        Ok(Self {
            limiter: RateLimiter::dashmap(gq).with_middleware::<StateInformationMiddleware>(),
            blocked: Mutex::new(HashMap::new()),
        })
    }

    /// Before any authentication work: `Some(retry_after_secs)` if the IP is refused.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *map.get(&ip)?;
        let now = Instant::now();
        (until > now).then(|| ceil_secs(until - now))
    }

    /// Counts one unauthenticated call (no credentials, or credentials refused).
    /// `Some(retry_after_secs)` when this call exhausted the quota.
    pub fn count(&self, ip: IpAddr) -> Option<u64> {
        match self.limiter.check_key(&ip) {
            Ok(_) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.blocked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ip, Instant::now() + wait);
                Some(ceil_secs(wait))
            }
        }
    }

    pub fn upkeep(&self) -> usize {
        let now = Instant::now();
        {
            let mut map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, until| *until > now);
            map.shrink_to_fit();
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(writes: u32, per: u64) -> OpsRuntime {
        let q = Quota {
            requests: writes,
            per: Duration::from_secs(per),
        };
        OpsRuntime {
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            admin_tokens: vec![],
            writes: q,
            reads: Quota {
                requests: 100,
                per: Duration::from_secs(1),
            },
            unauthenticated_per_ip: q,
            product_lookups: q,
            tenant_quotas: HashMap::from([(
                TenantId::parse("big").unwrap(),
                (
                    Some(Quota {
                        requests: 1000,
                        per: Duration::from_secs(1),
                    }),
                    None,
                ),
            )]),
            max_in_flight: 10,
            request_timeout: Duration::from_secs(10),
            audit_retention_days: 0,
        }
    }

    #[test]
    fn product_quota_counts_lookups_per_product() {
        let l = ProductLimits::new(Quota {
            requests: 10,
            per: Duration::from_secs(60),
        })
        .unwrap();
        let a = l.check("a", 7);
        assert_eq!((a.limit, a.remaining, a.retry_after_secs), (10, 3, None));
        // Four more do not fit: refused whole, nothing taken.
        let refused = l.check("a", 4);
        assert_eq!(refused.retry_after_secs, Some(6));
        assert_eq!(l.check("a", 3).remaining, 0);
        assert!(l.check("a", 1).retry_after_secs.is_some());
        // Another product has its own quota; more than a whole quota never fits.
        assert_eq!(l.check("b", 10).remaining, 0);
        assert_eq!(l.check("c", 11).retry_after_secs, Some(60));
        assert_eq!(l.check("c", 1).remaining, 9);
    }

    #[test]
    fn headers_and_retry_after_are_exact() {
        let l = TenantLimits::new(&rt(2, 60)).unwrap();
        let a = TenantId::parse("a").unwrap();
        let first = l.check(&a, Class::Write);
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert_eq!(first.reset_header(), "30");
        let second = l.check(&a, Class::Write);
        assert_eq!((second.remaining, second.reset_header()), (0, "60".into()));
        assert_eq!(second.retry_after_secs, None);
        let third = l.check(&a, Class::Write);
        assert_eq!(third.retry_after_secs, Some(30));
        assert_eq!(third.remaining, 0);
        // Reads are a separate quota; another tenant is untouched; overrides apply.
        assert_eq!(l.check(&a, Class::Read).remaining, 99);
        let b = TenantId::parse("b").unwrap();
        assert_eq!(l.check(&b, Class::Write).remaining, 1);
        let big = TenantId::parse("big").unwrap();
        assert_eq!(l.check(&big, Class::Write).limit, 1000);
        // The idle read key may already count as fresh and be dropped.
        assert!((3..=4).contains(&l.upkeep()));
    }

    #[test]
    fn reset_header_is_decimal() {
        let r = |ms| RateInfo {
            limit: 1,
            remaining: 0,
            reset: Duration::from_micros(ms),
            retry_after_secs: None,
        };
        assert_eq!(r(200_000).reset_header(), "0.2");
        assert_eq!(r(1_500_000).reset_header(), "1.5");
        assert_eq!(r(1_000_001).reset_header(), "1.001");
        assert_eq!(r(0).reset_header(), "0");
    }

    #[test]
    fn ip_limiter_blocks_after_its_quota() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let l = IpLimits::new(Quota {
            requests: 2,
            per: Duration::from_secs(60),
        })
        .unwrap();
        assert_eq!(l.blocked(ip), None);
        assert_eq!(l.count(ip), None);
        assert_eq!(l.count(ip), None);
        assert_eq!(l.count(ip), Some(30));
        assert_eq!(l.blocked(ip), Some(30));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.blocked(other), None);
        assert_eq!(l.upkeep(), 1);
    }
}
