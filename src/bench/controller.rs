//! `l2lb bench controller`: how long the controller takes to give N waiting
//! Services an address, against the API server's own ceiling measured in
//! the same run (N status patches issued directly, same concurrency), and
//! how many API requests it spends doing so. Both runs are timed the same
//! way: until one watch has seen every Service with an address. The
//! controller's time includes its start (leader election, listing).

use super::BenchError;
use crate::api::{INSTALL_NAMESPACE, IPAddressPool};
use crate::controller::{ControllerConfig, run as run_controller};
use crate::lab::apiserver::{ApiServer, client_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 32;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(e.to_string())
}

async fn server() -> Result<(ApiServer, Client, CancellationToken), BenchError> {
    let server = ApiServer::with_l2lb_crds();
    let (url, stop) = server.start_local().await.map_err(err)?;
    let client = client_for(&url).map_err(err)?;
    Ok((server, client, stop))
}

async fn create_services(client: &Client, n: usize) -> Result<(), BenchError> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": { "name": format!("bench-{i:05}"), "namespace": "default" },
                    // No node ports: 5000 Services would exhaust the API
                    // server's 2768, and L2 announcement does not use them.
                    "spec": { "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                              "ports": [{ "port": 80, "protocol": "TCP" }] },
                }))
                .map_err(err)?;
                api.create(&PostParams::default(), &svc)
                    .await
                    .map_err(err)?;
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// A watch on the bench's Services from now on: both runs are timed by
/// the same observer, so its cost on the API server is in both.
async fn observe(
    api: &Api<Service>,
) -> Result<futures::stream::BoxStream<'static, kube::Result<WatchEvent<Service>>>, BenchError> {
    let rv = api
        .list(&Default::default())
        .await
        .map_err(err)?
        .metadata
        .resource_version
        .unwrap_or_default();
    Ok(api
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .map_err(err)?
        .boxed())
}

/// Waits until the watch has shown `n` distinct Services with an address.
async fn wait_assigned(
    stream: &mut futures::stream::BoxStream<'static, kube::Result<WatchEvent<Service>>>,
    n: usize,
    deadline: Instant,
) -> Result<(), BenchError> {
    let mut assigned: HashSet<String> = HashSet::new();
    while assigned.len() < n {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .map_err(|_| {
                BenchError::Failed(format!(
                    "only {} of {n} Services assigned in time",
                    assigned.len()
                ))
            })?;
        match next {
            Some(Ok(WatchEvent::Modified(svc)))
                if svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty()) =>
            {
                assigned.insert(svc.name_any());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(err(e)),
            None => return Err(BenchError::Failed("watch ended early".into())),
        }
    }
    Ok(())
}

/// The API server's ceiling: N status patches, nothing else, until the
/// same watch the controller run uses has seen them all.
async fn raw_patches(n: usize) -> Result<f64, BenchError> {
    let (_server, client, stop) = server().await?;
    create_services(&client, n).await?;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let list = api.list(&Default::default()).await.map_err(err)?;
    let mut stream = observe(&api).await?;
    let started = Instant::now();
    futures::stream::iter(list.items.into_iter().enumerate())
        .map(|(i, svc)| {
            let api = api.clone();
            async move {
                let ip = format!("198.18.{}.{}", i / 256, i % 256);
                let patch = json!({
                    "metadata": { "resourceVersion": svc.resource_version() },
                    "status": { "loadBalancer": { "ingress": [{ "ip": ip, "ipMode": "VIP" }] } },
                });
                api.patch_status(
                    &svc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(err)?;
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    wait_assigned(&mut stream, n, started + Duration::from_secs(600)).await?;
    let took = started.elapsed().as_secs_f64();
    stop.cancel();
    Ok(took)
}

/// Figures of one controller run.
struct Run {
    all_assigned_s: f64,
    api_requests: u64,
    event_requests: u64,
}

async fn controller_run(n: usize) -> Result<Run, BenchError> {
    let (server, client, stop) = server().await?;
    let pool: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": { "name": "bench", "namespace": INSTALL_NAMESPACE },
        "spec": { "addresses": ["198.18.0.0/16"] },
    }))
    .map_err(err)?;
    Api::<IPAddressPool>::namespaced(client.clone(), INSTALL_NAMESPACE)
        .create(&PostParams::default(), &pool)
        .await
        .map_err(err)?;
    create_services(&client, n).await?;

    // Watch from now on; the bench's own requests are this one watch.
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut stream = observe(&api).await?;
    server.reset_requests();

    let token = CancellationToken::new();
    // Nothing serves the config's metrics: the bench counts API requests.
    let config = ControllerConfig {
        namespace: INSTALL_NAMESPACE.into(),
        max_concurrent_writes: CONCURRENCY,
        ..ControllerConfig::new("bench")
    };
    let started = Instant::now();
    let controller = tokio::spawn(run_controller(config, client.clone(), token.clone()));
    wait_assigned(&mut stream, n, started + Duration::from_secs(600)).await?;
    let all_assigned_s = started.elapsed().as_secs_f64();
    // Let trailing Events land so they are counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = server.requests();
    token.cancel();
    let _ = controller.await;
    stop.cancel();
    let mut api_requests = 0;
    let mut event_requests = 0;
    for ((_verb, resource), count) in counts.by_key.iter() {
        if resource == "events" {
            event_requests += count;
        } else {
            api_requests += count;
        }
    }
    // The bench's own watch is not the controller's.
    api_requests = api_requests.saturating_sub(1);
    Ok(Run {
        all_assigned_s,
        api_requests,
        event_requests,
    })
}

/// Runs the benchmark for 1000 and 5000 Services; the last line is the
/// 5000-Service JSON report.
pub fn run() -> Result<(), BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    rt.block_on(async {
        for n in [1000usize, 5000] {
            let raw = raw_patches(n).await?;
            let ctl = controller_run(n).await?;
            let ratio = ctl.all_assigned_s / raw;
            println!(
                "controller: {n} Services assigned in {:.3} s; {n} raw status patches took {:.3} s (ratio {:.2}); \
                 {} API requests besides {} Event writes ({:.2} per Service)",
                ctl.all_assigned_s,
                raw,
                ratio,
                ctl.api_requests,
                ctl.event_requests,
                ctl.api_requests as f64 / n as f64
            );
            println!(
                "{}",
                json!({
                    "bench": "controller",
                    "services": n,
                    "all_assigned_s": (ctl.all_assigned_s * 1000.0).round() / 1000.0,
                    "raw_patch_s": (raw * 1000.0).round() / 1000.0,
                    "ratio": (ratio * 100.0).round() / 100.0,
                    "api_requests": ctl.api_requests,
                    "event_requests": ctl.event_requests,
                })
            );
        }
        Ok(())
    })
}
