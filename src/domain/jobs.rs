//! Durable bulk jobs: an accepted batch of writes processed asynchronously, with one
//! result per item (the SS12000:2020 push API's asynchronous jobs).
//!
//! Life of a job: [`Jobs::accept`] stores the header and every item in one durable batch
//! before the client hears 202, and queues it. A runner takes queued jobs in acceptance
//! order and processes their items; each item that changes an object writes a *mark*
//! (`job, index → operation + warnings`) in the same atomic batch as the object
//! ([`crate::domain::Provisioning::write_marked`]), so after a crash an item is either
//! not applied (no mark: it is processed again) or applied (mark: its result is rebuilt
//! from the mark, never applied twice). Results are recorded in rounds; the last round
//! also marks the job finished and takes it off the queue. Finished jobs are purged after
//! the retention time.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::tenant::TenantId;
use crate::store::{Op, Store};

/// What a job does with its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOp {
    /// Create; an existing id is an item error.
    Create,
    /// Create or replace.
    Upsert,
    /// Replace; an unknown id is an item error.
    Update,
    /// Delete by id.
    Delete,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHeader {
    pub id: String,
    pub tenant: TenantId,
    /// The protocol's resource name (`persons`, `groups`, …).
    pub resource: String,
    pub op: JobOp,
    /// Label of the credential that submitted it (never the secret).
    pub credential: String,
    pub accepted: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    pub items: u32,
}

/// The outcome class of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemStatus {
    Pending,
    Success,
    Warning,
    Error,
    TemporaryError,
}

/// One remark on an item (an error or a warning). `value` may hold personal data: it is
/// shown to the school owner that sent it, and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Stable message id (documented in `docs/ss12000-push.md`).
    pub code: String,
    pub status_code: u16,
    pub message_type: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The result of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    pub id: String,
    pub status: ItemStatus,
    pub status_code: u16,
    /// Set when the item created an object: the object's id (the protocol renders the URL).
    #[serde(default)]
    pub created: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Note>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Note>,
    pub at: DateTime<Utc>,
}

/// Written with the object in one batch: which job item applied, as what operation, with
/// the warnings it carried.
#[derive(Debug, Clone)]
pub struct JobMark {
    pub job: String,
    pub index: u32,
    /// Serialized warnings (opaque to the store).
    pub payload: Vec<u8>,
}

/// A job with everything recorded so far.
#[derive(Debug, Clone)]
pub struct JobState {
    pub header: JobHeader,
    /// Results by item index (`None`: not recorded yet).
    pub results: Vec<Option<ItemResult>>,
    /// Ids of the items, by index.
    pub ids: Vec<String>,
}

/// The job service over the store.
pub struct Jobs {
    store: Arc<dyn Store>,
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Stores a job with its items (raw JSON documents, or ids for deletes); returns once
    /// durable.
    pub async fn accept(&self, header: &JobHeader, items: &[String]) -> Result<(), DomainError> {
        let d = self.store.put_job(header, items)?;
        d.wait().await?;
        Ok(())
    }

    pub fn header(&self, tenant: &TenantId, id: &str) -> Result<Option<JobHeader>, DomainError> {
        Ok(self.store.get_job(tenant, id)?)
    }

    pub fn items(&self, tenant: &TenantId, id: &str) -> Result<Vec<String>, DomainError> {
        Ok(self.store.job_items(tenant, id)?)
    }

    /// Marks written by items that were applied, by index.
    pub fn marks(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Vec<(u32, Op, Vec<u8>)>, DomainError> {
        Ok(self.store.job_marks(tenant, id)?)
    }

    pub fn results(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Vec<(u32, ItemResult)>, DomainError> {
        Ok(self.store.job_results(tenant, id)?)
    }

    /// Records results; with `finished`, also the finished header (the job leaves the
    /// queue in the same batch). Returns once durable.
    pub async fn record(
        &self,
        tenant: &TenantId,
        id: &str,
        results: &[(u32, ItemResult)],
        finished: Option<&JobHeader>,
    ) -> Result<(), DomainError> {
        let d = self.store.put_job_results(tenant, id, results, finished)?;
        d.wait().await?;
        Ok(())
    }

    /// A job's header and results, for a status answer. `None` if this tenant has no such
    /// job.
    pub fn state(&self, tenant: &TenantId, id: &str) -> Result<Option<JobState>, DomainError> {
        let Some(header) = self.header(tenant, id)? else {
            return Ok(None);
        };
        let items = self.items(tenant, id)?;
        let ids = items.iter().map(|raw| item_id(raw)).collect();
        let mut results = vec![None; items.len()];
        for (i, r) in self.results(tenant, id)? {
            if let Some(slot) = results.get_mut(i as usize) {
                *slot = Some(r);
            }
        }
        Ok(Some(JobState {
            header,
            results,
            ids,
        }))
    }

    /// Queued (unfinished) jobs in acceptance order.
    pub fn pending(&self) -> Result<Vec<(TenantId, String)>, DomainError> {
        Ok(self.store.pending_jobs()?)
    }

    /// Deletes finished jobs that finished before `before`; returns how many.
    pub async fn purge(&self, before: DateTime<Utc>) -> Result<usize, DomainError> {
        let mut n = 0;
        for h in self.store.list_jobs()? {
            if h.finished.is_some_and(|f| f < before) {
                self.store.delete_job(&h.tenant, &h.id)?.wait().await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The id of a stored item: a delete item is the id itself (a JSON string); an object item
/// has an `id` attribute. Anything else has no id (empty).
pub fn item_id(raw: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn header(id: &str) -> JobHeader {
        JobHeader {
            id: id.into(),
            tenant: TenantId::parse("t").unwrap(),
            resource: "persons".into(),
            op: JobOp::Delete,
            credential: "k".into(),
            accepted: Utc::now(),
            finished: None,
            items: 2,
        }
    }

    #[tokio::test]
    async fn state_purge_and_item_ids() {
        let jobs = Jobs::new(Arc::new(MemoryStore::in_memory()));
        let t = TenantId::parse("t").unwrap();
        let items = vec!["\"a\"".to_string(), "{\"id\":\"b\"}".to_string()];
        jobs.accept(&header("done"), &items).await.unwrap();
        jobs.accept(&header("open"), &items).await.unwrap();
        let st = jobs.state(&t, "open").unwrap().unwrap();
        assert_eq!(st.ids, vec!["a", "b"]);
        assert_eq!(st.results, vec![None, None]);
        let mut fin = header("done");
        fin.finished = Some(Utc::now());
        jobs.record(&t, "done", &[], Some(&fin)).await.unwrap();
        assert_eq!(
            jobs.pending().unwrap(),
            vec![(t.clone(), "open".to_string())]
        );
        // Only finished jobs older than the cut-off are purged.
        assert_eq!(
            jobs.purge(Utc::now() - chrono::Duration::hours(1))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            jobs.purge(Utc::now() + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            1
        );
        assert!(jobs.header(&t, "done").unwrap().is_none());
        assert!(jobs.header(&t, "open").unwrap().is_some());
        assert_eq!(item_id("[1]"), "");
    }
}
