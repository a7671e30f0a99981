//! Batches (Reach's extension): live response on many machines in one call.

use reach_proto::api::{Batch, Collection, CreateBatchRequest, MachineAction};
use reqwest::Method;

use super::{Client, ClientError, Result, json, segment};

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
        let response = self.results_response(id, index).await?;
        let mut lines = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            lines += chunk?.iter().filter(|b| **b == b'\n').count();
        }
        Ok(lines)
    }

    /// `GET /api/batches/{id}/results?index=N`: each machine's line.
    pub async fn batch_results(&self, id: &str, index: u32) -> Result<Vec<serde_json::Value>> {
        use futures::StreamExt;
        let response = self.results_response(id, index).await?;
        let mut lines = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            pending.extend_from_slice(&chunk?);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let value =
                    serde_json::from_slice(&line).map_err(|err| ClientError::Unexpected {
                        status: reqwest::StatusCode::OK,
                        body: format!("a results line that is not JSON: {err}"),
                    })?;
                lines.push(value);
            }
        }
        Ok(lines)
    }

    /// `POST /api/batches/{id}/{verb}` (`cancel`, `pause`, `resume`).
    pub async fn batch_control(
        &self,
        id: &str,
        verb: &str,
        comment: Option<&str>,
    ) -> Result<Batch> {
        let path = format!("/api/batches/{}/{}", segment(id), segment(verb));
        let body = serde_json::json!({ "Comment": comment });
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    async fn results_response(&self, id: &str, index: u32) -> Result<reqwest::Response> {
        let path = format!("/api/batches/{}/results", segment(id));
        super::check(
            self.request(Method::GET, &path)
                .query(&[("index", index)])
                .send()
                .await?,
        )
        .await
    }
}
