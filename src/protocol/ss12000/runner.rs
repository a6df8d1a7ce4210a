//! The job runner: takes accepted bulk jobs in acceptance order and processes each job's
//! items concurrently through the provisioning service, recording one result per item
//! (see `domain::jobs` for why no item is lost or applied twice across a crash).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::profile::{self, note, INVALID_FORMAT, INVALID_VALUE, MISSING_VALUE};
use super::schema::Schemas;
use super::types::Ss12Type;
use super::wire;
use crate::domain::jobs::{item_id, ItemResult, ItemStatus, JobHeader, JobMark, JobOp, Jobs, Note};
use crate::domain::rules::normalise_uuid;
use crate::domain::service::WriteMode;
use crate::domain::{
    ConflictKind, DomainError, Protocol, Provisioning, RuleId, Tenant, TenantId, WriteContext,
};
use crate::store::Op;

/// Results are recorded in rounds of this many items.
const RECORD_ROUND: usize = 250;

pub struct Runner {
    pub provisioning: Provisioning,
    pub jobs: Jobs,
    pub schemas: Arc<Schemas>,
    pub tenants: HashMap<TenantId, Arc<Tenant>>,
    pub concurrency: usize,
    pub retention: chrono::Duration,
}

/// Hands accepted jobs to the runner.
#[derive(Clone)]
pub struct JobQueue {
    tx: mpsc::UnboundedSender<(TenantId, String)>,
}

impl JobQueue {
    pub fn submit(&self, tenant: TenantId, job: String) {
        if self.tx.send((tenant, job)).is_err() {
            // The job is stored and queued durably; the next start runs it.
            tracing::error!("job runner has stopped; the job runs at the next start");
        }
    }
}

/// Starts the runner on its own thread and runtime, first re-queueing every job that was
/// accepted but not finished before the last stop (or crash).
pub fn start(runner: Runner) -> Result<JobQueue, String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pending = runner
        .jobs
        .pending()
        .map_err(|e| format!("reading queued jobs: {e}"))?;
    if !pending.is_empty() {
        tracing::info!(jobs = pending.len(), "resuming queued SS12000 jobs");
    }
    for p in pending {
        let _ = tx.send(p);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ss12000-jobs")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the job runner: {e}"))?;
    std::thread::Builder::new()
        .name("ss12000-runner".into())
        .spawn(move || {
            rt.block_on(async move {
                let runner = Arc::new(runner);
                let purger = runner.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_secs(600));
                    loop {
                        every.tick().await;
                        let before = Utc::now() - purger.retention;
                        match purger.jobs.purge(before).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(jobs = n, "purged expired SS12000 jobs"),
                            Err(e) => tracing::warn!(error = %e, "purging expired jobs failed"),
                        }
                    }
                });
                while let Some((tenant, job)) = rx.recv().await {
                    if let Err(e) = runner.run(&tenant, &job).await {
                        tracing::error!(%tenant, job = %job, error = %e, "job stopped; it resumes at the next start");
                    }
                }
            });
        })
        .map_err(|e| format!("starting the job runner: {e}"))?;
    Ok(JobQueue { tx })
}

fn result(id: String, status: ItemStatus, code: u16) -> ItemResult {
    ItemResult {
        id,
        status,
        status_code: code,
        created: false,
        errors: Vec::new(),
        warnings: Vec::new(),
        at: Utc::now(),
    }
}

fn failed(id: String, code: u16, errors: Vec<Note>, warnings: Vec<Note>) -> ItemResult {
    ItemResult {
        errors,
        warnings,
        ..result(id, ItemStatus::Error, code)
    }
}

/// The result of an item that was applied (now, or before a crash: from its mark).
fn applied(id: String, op: Op, warnings: Vec<Note>) -> ItemResult {
    let code = match op {
        Op::Create => 201,
        Op::Update => 200,
        Op::Delete => 204,
    };
    let status = if warnings.is_empty() {
        ItemStatus::Success
    } else {
        ItemStatus::Warning
    };
    ItemResult {
        created: op == Op::Create,
        warnings,
        ..result(id, status, code)
    }
}

/// The value at a wire path (`enrolments[0].schoolYear`), for the job answer.
pub fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[') {
            let idx = idx.trim_end_matches(']');
            if !idx.is_empty() {
                cur = cur.get(idx.parse::<usize>().ok()?)?;
            }
        }
    }
    Some(cur)
}

fn schema_note(v: &crate::domain::Violation, item: &Value) -> Note {
    let (code, mt) = match v.rule {
        RuleId::Required => ("7000", MISSING_VALUE),
        RuleId::Enum => ("7002", INVALID_VALUE),
        RuleId::Schema => ("7003", INVALID_VALUE),
        _ => ("7001", INVALID_FORMAT),
    };
    let value = if v.rule == RuleId::Required {
        None
    } else {
        value_at(item, &v.path)
    };
    note(code, 400, mt, &v.detail, v.path.clone(), value)
}

fn from_domain(
    id: String,
    e: DomainError,
    item: Option<&Value>,
    warnings: Vec<Note>,
) -> ItemResult {
    let e = e.map_path(wire::wire_path);
    let at = |path: &str| item.and_then(|i| value_at(i, path));
    match e {
        DomainError::Invalid(v) => {
            let mut errors = vec![note(
                "7010",
                400,
                INVALID_VALUE,
                &v.detail,
                v.path.clone(),
                at(&v.path),
            )];
            errors.extend(v.also.iter().map(|a| {
                note(
                    "7010",
                    400,
                    INVALID_VALUE,
                    &a.detail,
                    a.path.clone(),
                    at(&a.path),
                )
            }));
            failed(id, 400, errors, warnings)
        }
        DomainError::Conflict(ConflictKind::AlreadyExists) => failed(
            id,
            409,
            vec![note(
                "7020",
                409,
                INVALID_VALUE,
                "the object already exists (use updateIfExists=true or PUT to replace it)",
                "id",
                None,
            )],
            warnings,
        ),
        DomainError::Conflict(ConflictKind::Unique { path }) => failed(
            id,
            409,
            vec![note(
                "7021",
                409,
                INVALID_VALUE,
                "the EPPN is already held by another person",
                path.clone(),
                at(&path),
            )],
            warnings,
        ),
        DomainError::Conflict(ConflictKind::OtherType) => failed(
            id,
            409,
            vec![note(
                "7022",
                409,
                INVALID_VALUE,
                "the id is used by an object of another type",
                "id",
                None,
            )],
            warnings,
        ),
        DomainError::NotFound => failed(
            id,
            404,
            vec![note(
                "7023",
                404,
                INVALID_VALUE,
                "no such object",
                "id",
                None,
            )],
            warnings,
        ),
        DomainError::Suspended { .. }
        | DomainError::Unavailable
        | DomainError::RateLimited { .. } => ItemResult {
            errors: vec![note(
                "7030",
                503,
                "Teknisk begränsning",
                "temporarily not possible; send the item again later",
                "id",
                None,
            )],
            warnings,
            ..result(id, ItemStatus::TemporaryError, 503)
        },
        DomainError::Internal => failed(
            id,
            500,
            vec![note("5004", 500, "Okänt fel", "unknown error", "id", None)],
            warnings,
        ),
        DomainError::PayloadTooLarge { .. }
        | DomainError::UnsupportedMediaType
        | DomainError::Unauthorized
        | DomainError::Forbidden => failed(
            id,
            400,
            vec![note(
                "7003",
                400,
                INVALID_VALUE,
                "the item was refused",
                "id",
                None,
            )],
            warnings,
        ),
    }
}

impl Runner {
    async fn run(&self, tenant_id: &TenantId, job: &str) -> Result<(), DomainError> {
        let Some(header) = self.jobs.header(tenant_id, job)? else {
            return Ok(());
        };
        if header.finished.is_some() {
            return Ok(());
        }
        let items = self.jobs.items(tenant_id, job)?;
        let done: HashSet<u32> = self
            .jobs
            .results(tenant_id, job)?
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let mut marks: HashMap<u32, (Op, Vec<u8>)> = self
            .jobs
            .marks(tenant_id, job)?
            .into_iter()
            .map(|(i, op, p)| (i, (op, p)))
            .collect();
        let tenant = self.tenants.get(tenant_id).cloned();
        let ty = Ss12Type::from_path(&header.resource);
        let work: Vec<_> = items
            .into_iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                let i = u32::try_from(i).ok()?;
                (!done.contains(&i)).then(|| (i, raw, marks.remove(&i)))
            })
            .collect();
        tracing::debug!(%tenant_id, job, items = work.len(), "processing SS12000 job");
        let header_ref = &header;
        let tenant_ref = tenant.as_ref();
        let mut results =
            futures_util::stream::iter(work.into_iter().map(|(i, raw, mark)| async move {
                let id = item_id(&raw);
                let r = match (tenant_ref, ty) {
                    (Some(t), Some(ty)) => self.item(t, ty, header_ref, i, raw, mark).await,
                    _ => failed(
                        id,
                        403,
                        vec![note(
                            "5002",
                            403,
                            "Behörighet saknas",
                            "the school owner is no longer configured",
                            "id",
                            None,
                        )],
                        Vec::new(),
                    ),
                };
                (i, r)
            }))
            .buffer_unordered(self.concurrency.max(1));
        let mut round = Vec::with_capacity(RECORD_ROUND);
        while let Some(r) = results.next().await {
            round.push(r);
            if round.len() >= RECORD_ROUND {
                self.jobs.record(tenant_id, job, &round, None).await?;
                round.clear();
            }
        }
        let mut finished = header.clone();
        finished.finished = Some(Utc::now());
        self.jobs
            .record(tenant_id, job, &round, Some(&finished))
            .await?;
        tracing::debug!(%tenant_id, job, "SS12000 job finished");
        Ok(())
    }

    async fn item(
        &self,
        tenant: &Arc<Tenant>,
        ty: Ss12Type,
        header: &JobHeader,
        index: u32,
        raw: String,
        mark: Option<(Op, Vec<u8>)>,
    ) -> ItemResult {
        let id = item_id(&raw);
        if let Some((op, payload)) = mark {
            let warnings = serde_json::from_slice(&payload).unwrap_or_default();
            return applied(id, op, warnings);
        }
        let ctx = WriteContext {
            tenant: tenant.clone(),
            protocol: Protocol::Ss12000Push,
            credential: header.credential.clone(),
            now: Utc::now(),
        };
        let mark = |warnings: &[Note]| JobMark {
            job: header.id.clone(),
            index,
            payload: serde_json::to_vec(warnings).unwrap_or_else(|_| b"[]".to_vec()),
        };
        if header.op == JobOp::Delete {
            let Ok(uuid) = normalise_uuid(&id) else {
                let v = Value::String(id.clone());
                return failed(
                    id,
                    400,
                    vec![note(
                        "7001",
                        400,
                        INVALID_FORMAT,
                        "expected a UUID (8-4-4-4-12 hexadecimal digits)",
                        "id",
                        Some(&v),
                    )],
                    Vec::new(),
                );
            };
            return match self
                .provisioning
                .delete_marked(&ctx, ty.sel(), &uuid, &mark(&[]))
                .await
            {
                Ok(()) => applied(uuid, Op::Delete, Vec::new()),
                Err(e) => from_domain(uuid, e, None, Vec::new()),
            };
        }
        let Ok(item) = serde_json::from_str::<Value>(&raw) else {
            return failed(
                id,
                400,
                vec![note(
                    "7001",
                    400,
                    INVALID_FORMAT,
                    "the item is not valid JSON",
                    "id",
                    None,
                )],
                Vec::new(),
            );
        };
        if !item.is_object() {
            return failed(
                id,
                400,
                vec![note(
                    "7001",
                    400,
                    INVALID_FORMAT,
                    "each item must be a JSON object",
                    "id",
                    None,
                )],
                Vec::new(),
            );
        }
        let violations = self.schemas.validate(ty, &item);
        if !violations.is_empty() {
            let errors = violations.iter().map(|v| schema_note(v, &item)).collect();
            return failed(id, 400, errors, Vec::new());
        }
        let incoming = match wire::to_incoming(ty, &item, raw) {
            Ok(i) => i,
            Err(e) => return from_domain(id, e, Some(&item), Vec::new()),
        };
        let id = incoming.id.clone();
        let object =
            |k: crate::domain::Kind, rid: &str| self.provisioning.model(&tenant.id, k, rid);
        let has_duty = |pid: &str| self.provisioning.holds_duty(&tenant.id, pid);
        let lookups = profile::Lookups {
            object: &object,
            has_duty: &has_duty,
        };
        let checked = profile::check(tenant.ss12000_profile, ty, &item, &lookups);
        if !checked.errors.is_empty() {
            return failed(id, 400, checked.errors, checked.warnings);
        }
        let mode = match header.op {
            JobOp::Create => WriteMode::Create,
            JobOp::Upsert => WriteMode::Upsert,
            JobOp::Update => {
                if self.provisioning.get(&tenant.id, ty.sel(), &id).is_err() {
                    return from_domain(id, DomainError::NotFound, Some(&item), checked.warnings);
                }
                WriteMode::Upsert
            }
            JobOp::Delete => return failed(id, 500, Vec::new(), Vec::new()),
        };
        match self
            .provisioning
            .write_marked(&ctx, ty.sel(), mode, incoming, &mark(&checked.warnings))
            .await
        {
            Ok(out) => applied(
                id,
                if out.created { Op::Create } else { Op::Update },
                checked.warnings,
            ),
            Err(e) => from_domain(id, e, Some(&item), checked.warnings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_at_paths() {
        let v = json!({"a": {"b": [1, {"c": "x"}]}, "eduPersonPrincipalNames": ["e"]});
        assert_eq!(value_at(&v, "a.b[1].c"), Some(&json!("x")));
        assert_eq!(
            value_at(&v, "eduPersonPrincipalNames[0]"),
            Some(&json!("e"))
        );
        assert_eq!(value_at(&v, "a.z"), None);
    }
}
