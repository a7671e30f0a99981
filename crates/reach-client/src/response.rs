//! Defender's response actions on one machine: isolate, release, offboard,
//! stop and quarantine a file.

use reach_proto::api::{
    IsolateRequest, MachineAction, ResponseActionRequest, StopAndQuarantineRequest, StringValue,
};
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

    /// `POST /api/machines/{id}/offboard`.
    pub async fn offboard(&self, machine: &str, comment: &str) -> Result<MachineAction> {
        let path = format!("/api/machines/{}/offboard", segment(machine));
        let body = ResponseActionRequest {
            comment: Some(comment.to_string()),
        };
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    /// `POST /api/machines/{id}/StopAndQuarantineFile`.
    pub async fn stop_and_quarantine_file(
        &self,
        machine: &str,
        comment: &str,
        sha1: &str,
    ) -> Result<MachineAction> {
        let path = format!("/api/machines/{}/StopAndQuarantineFile", segment(machine));
        let body = StopAndQuarantineRequest {
            comment: Some(comment.to_string()),
            sha1: Some(sha1.to_string()),
        };
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    /// `POST /api/machines/{id}/collectInvestigationPackage`.
    pub async fn collect_investigation_package(
        &self,
        machine: &str,
        comment: &str,
    ) -> Result<MachineAction> {
        let path = format!(
            "/api/machines/{}/collectInvestigationPackage",
            segment(machine)
        );
        let body = ResponseActionRequest {
            comment: Some(comment.to_string()),
        };
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    /// `GET /api/machineactions/{id}/getPackageUri`: the package's link.
    pub async fn package_uri(&self, action: &str) -> Result<String> {
        let path = format!("/api/machineactions/{}/getPackageUri", segment(action));
        let value: StringValue = json(self.request(Method::GET, &path).send().await?).await?;
        Ok(value.value)
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
