//! Batches (Reach's extension): live response on many machines in one call.

use reach_proto::api::{Batch, Collection, CreateBatchRequest, MachineAction};
use reqwest::Method;

use super::{Client, Result, json, segment};

impl Client {
    /// `POST /api/batches`.
    pub async fn create_batch(&self, request: &CreateBatchRequest) -> Result<Batch> {
        json(
            self.request(Method::POST, "/api/batches")
                .json(request)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/batches/{id}`.
    pub async fn batch(&self, id: &str) -> Result<Batch> {
        json(
            self.request(Method::GET, &format!("/api/batches/{}", segment(id)))
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/batches` with OData options.
    pub async fn batches(&self, odata: &[(&str, &str)]) -> Result<Collection<Batch>> {
        json(
            self.request(Method::GET, "/api/batches")
                .query(odata)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/batches/{id}/machineactions` with OData options.
    pub async fn batch_actions(
        &self,
        id: &str,
        odata: &[(&str, &str)],
    ) -> Result<Collection<MachineAction>> {
        let path = format!("/api/batches/{}/machineactions", segment(id));
        json(self.request(Method::GET, &path).query(odata).send().await?).await
    }

    /// `GET /api/batches/{id}/results?index=N`, read as it streams: the
    /// number of lines (machines with a final command N).
    pub async fn batch_results_lines(&self, id: &str, index: u32) -> Result<usize> {
        use futures::StreamExt;
        let path = format!("/api/batches/{}/results", segment(id));
        let response = super::check(
            self.request(Method::GET, &path)
                .query(&[("index", index)])
                .send()
                .await?,
        )
        .await?;
        let mut lines = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            lines += chunk?.iter().filter(|b| **b == b'\n').count();
        }
        Ok(lines)
    }
}
