//! The executor's periodic sweep: terminal states the watches did not
//! report, pods stuck unpullable, unschedulable or without their
//! ConfigMaps or Secrets, and Jobs of failed
//! creates that landed after all.

use std::time::Duration;

use chrono::Utc;
use kube::api::DeleteParams;

use super::{job_id, job_name, KubernetesExecutor};
use crate::job::{JobId, JobState};

/// How often jobs are checked for stuck pods and missed terminal states.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// How long a terminal job's report waits for its pods' final status.
const SETTLE_WAIT: Duration = Duration::from_secs(5);
/// How long a create with an unknown outcome is watched for, in case its
/// Job appears late.
const ABANDONED_WATCH: Duration = Duration::from_secs(600);

impl KubernetesExecutor {
    pub(super) fn is_abandoned(&self, id: JobId) -> bool {
        self.inner
            .abandoned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(&id)
    }

    /// Remembers a job whose create may have landed although it failed.
    pub(super) fn abandon(&self, id: JobId) {
        self.inner
            .abandoned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, std::time::Instant::now());
    }

    /// Deletes the Jobs of failed creates that landed after all.
    async fn delete_abandoned_jobs(&self) {
        let ids: Vec<JobId> = {
            let mut abandoned = self
                .inner
                .abandoned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            abandoned.retain(|_, since| since.elapsed() < ABANDONED_WATCH);
            abandoned.keys().copied().collect()
        };
        for id in ids {
            if self.cached_job(id).is_none() {
                continue;
            }
            tracing::warn!(job.id = %id, "deleting a Job whose create was reported failed");
            match self.within_timeout(self.inner.jobs_api.delete(&job_name(id), &DeleteParams::background())).await {
                Ok(Ok(_)) => {}
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
                Ok(Err(error)) => {
                    tracing::warn!(job.id = %id, %error, "deleting the Job of a failed create failed; retrying");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(job.id = %id, %error, "deleting the Job of a failed create failed; retrying");
                    continue;
                }
            }
            self.inner
                .abandoned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
        }
    }

    pub(super) fn report_terminal_jobs(&self) {
        for job in self.inner.jobs.state() {
            let Some(id) = job_id(&job) else { continue };
            if self.decided(id).is_some() || self.is_abandoned(id) {
                continue;
            }
            let (status, _) = self.status_of(id, &job);
            if status.state.is_terminal() && self.pods_settled(id) {
                self.report(id, status);
            }
        }
    }

    /// Returns true once no pod of a terminal job is still pending or
    /// running, or after [`SETTLE_WAIT`].
    ///
    /// Jobs and pods come through separate watches, so the Job's Failed
    /// condition can arrive before the failed pod's status. That status
    /// carries the precise reason (OOMKilled, the exit code), which the
    /// recorded final state needs.
    fn pods_settled(&self, id: JobId) -> bool {
        let settled = self.pods_of(id).iter().all(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some()
        });
        let mut settling = self.inner.settling.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if settled {
            settling.remove(&id);
            return true;
        }
        let since = *settling.entry(id).or_insert_with(std::time::Instant::now);
        if since.elapsed() >= SETTLE_WAIT {
            settling.remove(&id);
            return true;
        }
        false
    }

    pub(super) async fn sweep_loop(&self) {
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
            self.report_terminal_jobs();
            self.fail_stuck_jobs().await;
            self.delete_abandoned_jobs().await;
        }
    }

    /// Fails jobs whose pods have been stuck (see [`super::state::observe`]) for longer
    /// than the stuck timeout, and deletes their Jobs.
    async fn fail_stuck_jobs(&self) {
        let limit = chrono::Duration::from_std(self.inner.config.stuck_timeout).unwrap_or_default();
        for job in self.inner.jobs.state() {
            let Some(id) = job_id(&job) else { continue };
            if self.decided(id).is_some() {
                continue;
            }
            let (mut status, stuck) = self.status_of(id, &job);
            let Some(stuck) = stuck else { continue };
            if Utc::now() - stuck.since < limit {
                continue;
            }
            status.state = JobState::Failed;
            status.finished_at = Some(Utc::now());
            status.reason = Some(stuck.reason);
            status.message = Some(format!("{} for more than {} s: {}", stuck.reason, limit.num_seconds(), stuck.message));
            tracing::warn!(job.id = %id, reason = ?status.reason, "job stuck; failing it and deleting its Job");
            self.decide(id, status);
            if let Err(error) = self.api_call(self.inner.jobs_api.delete(&job_name(id), &DeleteParams::background())).await {
                tracing::warn!(job.id = %id, %error, "deleting a stuck Job failed");
            }
        }
    }
}
