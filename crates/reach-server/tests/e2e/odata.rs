//! OData on machine actions and machines: filters with every operator,
//! ordering, paging, `$count`, `+` as a space, and malformed queries.

use reach_proto::api::ActionStatus;

use reach_server::testing::*;

#[tokio::test]
async fn machine_actions_filter_order_and_page() {
    let server = TestServer::start().await;
    let a = server.enroll("a").await;
    let b = server.enroll("b").await;
    let first = server
        .client
        .run_live_response(&a.machine_id, &request(vec![get_file("/x")], "first"))
        .await
        .unwrap();
    server.client.cancel(&first.id, "done").await.unwrap();
    let second = server
        .client
        .run_live_response(&a.machine_id, &request(vec![get_file("/y")], "second"))
        .await
        .unwrap();
    let third = server
        .client
        .run_live_response(&b.machine_id, &request(vec![get_file("/z")], "third"))
        .await
        .unwrap();

    let ids = |query: &str| {
        let server = &server;
        let query = query.to_string();
        async move {
            let (status, body) = server
                .get_raw(&format!("/api/machineactions?{query}"))
                .await;
            assert_eq!(status, 200, "{query}: {body}");
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // Newest first by default.
    assert_eq!(
        ids("").await,
        vec![third.id.clone(), second.id.clone(), first.id.clone()]
    );
    assert_eq!(
        ids(&format!("$filter=machineId+eq+'{}'", a.machine_id)).await,
        vec![second.id.clone(), first.id.clone()]
    );
    assert_eq!(
        ids(&format!(
            "$filter=machineId%20eq%20%27{}%27%20and%20status%20eq%20%27Pending%27",
            a.machine_id
        ))
        .await,
        vec![second.id.clone()]
    );
    assert_eq!(
        ids("$filter=status eq 'Cancelled'").await,
        vec![first.id.clone()]
    );
    assert_eq!(
        ids("$filter=status ne 'Cancelled'").await,
        vec![third.id.clone(), second.id.clone()]
    );
    assert_eq!(
        ids("$filter=status in ('Cancelled','Succeeded')").await,
        vec![first.id.clone()]
    );
    assert_eq!(
        ids(&format!(
            "$filter=(id eq '{}' or id eq '{}') and type eq 'LiveResponse'",
            first.id, third.id
        ))
        .await,
        vec![third.id.clone(), first.id.clone()]
    );
    assert_eq!(ids("$filter=requestor eq 'everything'").await.len(), 3);
    assert_eq!(ids("$filter=requestor eq 'someone else'").await.len(), 0);
    let created = &second.creation_date_time_utc;
    assert_eq!(
        ids(&format!("$filter=creationDateTimeUtc ge {created}")).await,
        vec![third.id.clone(), second.id.clone()]
    );
    assert_eq!(
        ids(&format!("$filter=creationDateTimeUtc lt {created}")).await,
        vec![first.id.clone()]
    );
    assert_eq!(
        ids(&format!("$filter=creationDateTimeUtc le '{created}'")).await,
        vec![second.id.clone(), first.id.clone()]
    );
    assert_eq!(
        ids("$filter=creationDateTimeUtc gt 2000-01-01Z")
            .await
            .len(),
        3
    );
    assert_eq!(
        ids("$orderby=creationDateTimeUtc asc").await,
        vec![first.id.clone(), second.id.clone(), third.id.clone()]
    );
    assert_eq!(ids("$top=1&$skip=1").await, vec![second.id.clone()]);

    let (_, body) = server
        .get_raw("/api/machineactions?$count=true&$top=1&$filter=status+eq+'Pending'")
        .await;
    assert_eq!(body["@odata.count"], 2);
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#MachineActions")
    );
    let statuses: Vec<ActionStatus> = server
        .client
        .actions(&[])
        .await
        .unwrap()
        .value
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(
        statuses,
        [
            ActionStatus::Pending,
            ActionStatus::Pending,
            ActionStatus::Cancelled
        ]
    );
}

#[tokio::test]
async fn malformed_odata_is_a_400_naming_the_problem() {
    let server = TestServer::start().await;
    for (query, needle) in [
        ("$filter=status eq", "found the end"),
        ("$filter=status eq 'x' and", "found the end"),
        ("$filter=colour eq 'red'", "Unknown property 'colour'"),
        ("$filter=status gt 5", "status"),
        ("$filter=creationDateTimeUtc gt 'soon'", "not a date-time"),
        ("$top=10001", "at most 10000"),
        ("$top=ten", "$top"),
        ("$orderby=status sideways", "$orderby"),
        ("$orderby=colour", "Unknown property 'colour'"),
    ] {
        let response = server
            .client
            .request(
                reqwest::Method::GET,
                &format!("/api/machineactions?{query}"),
            )
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 400, "ODataError").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{query} → {message}");
    }
}

#[tokio::test]
async fn machines_filter_on_their_fields() {
    let server = TestServer::start().await;
    let online = server.agent().await;
    let offline = server.enroll("offline").await;
    let ids = |query: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server.get_raw(&format!("/api/machines?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            let mut ids: Vec<String> = body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![online.machine_id.clone(), offline.machine_id.clone()];
    both.sort();
    assert_eq!(ids("").await, both);
    assert_eq!(
        ids("$filter=healthStatus eq 'Active'").await,
        vec![online.machine_id.clone()]
    );
    assert_eq!(
        ids("$filter=healthStatus+ne+'Active'").await,
        vec![offline.machine_id.clone()]
    );
    assert_eq!(
        ids("$filter=osPlatform eq 'Linux' and lastSeen gt 2018-08-01Z").await,
        both
    );
    assert_eq!(
        ids("$filter=riskScore eq 'High'").await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids("$filter=machineTags/any(t: t eq 'prod')").await,
        Vec::<String>::new()
    );
    let machine = server.client.machine(&online.machine_id).await.unwrap();
    assert_eq!(machine.os_platform, "Linux");
    assert_eq!(machine.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(machine.os_architecture, "64-bit");
    assert_eq!(machine.last_ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(machine.id.len(), 40);
    let reported: Vec<String> = machine
        .ip_addresses
        .iter()
        .map(|a| a.ip_address.clone())
        .collect();
    let local: Vec<String> = reach_agent::system::machine_info()
        .ip_addresses
        .into_iter()
        .map(|a| a.ip_address)
        .collect();
    assert_eq!(reported, local);
    assert!(
        machine
            .ip_addresses
            .iter()
            .all(|a| a.operational_status == "Up")
    );
    let prefix = &machine.computer_dns_name[..1];
    let (_, body) = server
        .get_raw(&format!(
            "/api/machines?$filter=startswith(computerDnsName,'{prefix}')"
        ))
        .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn queries_past_the_parsers_bounds_are_clear_400s_not_500s() {
    let server = TestServer::start().await;
    let tagged = server.enroll("tagged").await;
    reach_server::admin::change_tags(
        server.state.store.as_ref(),
        &server.tenant_id,
        &tagged.machine_id,
        &["tag-150".to_string()],
        &[],
    )
    .await
    .unwrap();
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("'tag-{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    // Within the bounds: one flat list, whatever the engine's depth limit.
    for path in ["/api/machines", "/api/machineactions"] {
        let (status, body) = server
            .get_raw(&format!("{path}?$filter=machineTags+in+({})", list(200)))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, body) = server
        .get_raw(&format!(
            "/api/machines?$filter=machineTags+in+({})",
            list(200)
        ))
        .await;
    assert_eq!(body["value"][0]["id"], tagged.machine_id.as_str());
    let terms = (0..100)
        .map(|i| format!("computerDnsName+eq+'h{i}'"))
        .collect::<Vec<_>>()
        .join("+or+");
    let (status, body) = server
        .get_raw(&format!("/api/machines?$filter={terms}"))
        .await;
    assert_eq!(status, 200, "{body}");

    // Past them: 400 in the envelope, saying which bound.
    let many_terms = (0..101)
        .map(|i| format!("computerDnsName+eq+'h{i}'"))
        .collect::<Vec<_>>()
        .join("+or+");
    let order_by = vec!["id"; 2000].join(",");
    let short = (0..1000)
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    let cases = [
        (
            format!("$filter=machineTags+in+({short})"),
            "at most 200 values",
        ),
        (format!("$filter={many_terms}"), "more than 100 comparisons"),
        (format!("$orderby={order_by}"), "at most 8 properties"),
    ];
    for (query, needle) in cases {
        for path in ["/api/machines", "/api/machineactions"] {
            let (status, body) = server.get_raw(&format!("{path}?{query}")).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"]["code"], "ODataError", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{message}");
        }
    }
}
