//! The ConsumerProject adapter: observe and plan its dataset, views and jobUser binding; write the
//! views; write the binding. (Its dataset's access list and the views' authorizations are access
//! lists like any other: the lists phase writes them.)

use super::Clients;
use crate::cloud::CloudError;
use crate::cloud::iam::ProjectIam;
use crate::cloud::retry::Backoff;
use crate::consumer::iam::IamPlan;
use crate::consumer::layout::ConsumerTarget;
use crate::consumer::reconcile::{self, ConsumerPlan};

/// Observes and plans one ConsumerProject.
pub async fn plan(c: &Clients<'_>, t: &ConsumerTarget) -> Result<ConsumerPlan, crate::engine::PlanFailure> {
    reconcile::plan(c.bq, c.iam, t, &c.backoff)
        .await
        .map_err(|cause| crate::engine::PlanFailure {
            message: "cannot read its dataset, views or sources".into(),
            cause,
        })
}

/// Writes the dataset and views of a plan that is not refused.
pub async fn apply_views(c: &Clients<'_>, p: &ConsumerPlan) -> Result<Vec<String>, CloudError> {
    reconcile::apply_views(c.bq, p).await
}

/// Writes the jobUser binding.
pub async fn apply_iam(iam: &dyn ProjectIam, t: &ConsumerTarget, backoff: &Backoff) -> Result<IamPlan, CloudError> {
    reconcile::apply_iam(iam, t, backoff).await
}
