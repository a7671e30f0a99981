//! The library: names unique without case, blobs kept while anything uses them.

use super::*;

#[tokio::test]
async fn library_names_are_unique_without_case_and_blobs_stay_while_used() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let now = Micros::now();
        let row = |name: &str, sha: &str| LibraryRow {
            tenant_id: TENANT.into(),
            file_name: name.into(),
            sha256: sha.into(),
            size: 3,
            description: Some("d".into()),
            has_parameters: true,
            parameters_description: Some("-v".into()),
            created_by: "analyst".into(),
            last_updated_by: None,
            creation_time: now,
            last_updated_time: now,
            signature: Some(format!("sig-{sha}")),
        };
        assert!(
            store
                .put_library_file(&row("Collect.sh", "abc"), false)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store
                .put_library_file(&row("collect.SH", "def"), false)
                .await,
            Err(StoreError::Conflict(_))
        ));
        let replaced = store
            .put_library_file(&row("collect.SH", "def"), true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(replaced.sha256, "abc", "{}", backend.name);
        assert_eq!(replaced.signature.as_deref(), Some("sig-abc"));
        let stored = store.get_library_file(TENANT, "COLLECT.sh").await.unwrap();
        assert_eq!(stored.file_name, "Collect.sh");
        assert_eq!(stored.sha256, "def");
        assert_eq!(
            stored.signature.as_deref(),
            Some("sig-def"),
            "replaced with the file"
        );
        assert_eq!(stored.last_updated_by.as_deref(), Some("analyst"));
        // A queued action still needs the old bytes.
        store
            .create_action(
                &action("a1", &machines[0], vec![put_file("Collect.sh")]),
                LIMITS,
            )
            .await
            .unwrap();
        assert!(store.library_blob_in_use(TENANT, "abc").await.unwrap());
        assert!(!store.library_blob_in_use(TENANT, "zzz").await.unwrap());
        store
            .delete_library_file(TENANT, "collect.sh")
            .await
            .unwrap();
        assert!(store.list_library_files(TENANT).await.unwrap().is_empty());
        assert!(!store.library_blob_in_use(TENANT, "def").await.unwrap());
        assert!(matches!(
            store.delete_library_file(TENANT, "collect.sh").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
