//! Defender's response actions on one machine: isolate and release.

use reach_proto::api::{IsolateRequest, MachineAction, ResponseActionRequest};
use reqwest::Method;

use super::{Client, Result, json, segment};

impl Client {
    /// `POST /api/machines/{id}/isolate` with `IsolationType` `Full` or
    /// `Selective`.
    pub async fn isolate(
        &self,
        machine: &str,
        comment: &str,
        isolation_type: &str,
    ) -> Result<MachineAction> {
        let path = format!("/api/machines/{}/isolate", segment(machine));
        let body = IsolateRequest {
            comment: Some(comment.to_string()),
            isolation_type: Some(isolation_type.to_string()),
        };
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    /// `POST /api/machines/{id}/unisolate`.
    pub async fn unisolate(&self, machine: &str, comment: &str) -> Result<MachineAction> {
        let path = format!("/api/machines/{}/unisolate", segment(machine));
        let body = ResponseActionRequest {
            comment: Some(comment.to_string()),
        };
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }
}
