//! `l2lb status`: a read-only table of LoadBalancer Services with their VIP,
//! pool, announcing node and since when, from Service status and
//! `ServiceL2Status` objects. Works against any cluster, the lab included.
//! It never writes.

use crate::api::{IPAddressPool, ServiceL2Status};
use crate::model::{self, PoolIndex};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::fmt::Write;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `namespace/name` of the Service.
    pub service: String,
    /// Published addresses, comma-separated; `<pending>` when none.
    pub vips: String,
    /// Pool the addresses belong to.
    pub pool: String,
    /// Node announcing the Service; `-` when none.
    pub node: String,
    /// When that node started announcing (RFC 3339), or `-`.
    pub since: String,
}

/// Reads the cluster and returns the rows, sorted by Service.
pub async fn rows(client: &Client, namespace: &str) -> Result<Vec<Row>, kube::Error> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let pools = Api::<IPAddressPool>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let statuses = Api::<ServiceL2Status>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let index = PoolIndex::new(&pools.items);
    let mut rows: Vec<Row> = services
        .items
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer"))
        .map(|svc| {
            let ips = model::ingress_ips(svc);
            let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
            let status = statuses.items.iter().find(|st| {
                st.status
                    .as_ref()
                    .is_some_and(|s| s.service_name == name && s.service_namespace == ns)
            });
            let pool = ips
                .first()
                .and_then(|ip| index.pool_of(*ip))
                .unwrap_or("-")
                .to_string();
            Row {
                service: format!("{ns}/{name}"),
                vips: if ips.is_empty() {
                    "<pending>".into()
                } else {
                    ips.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
                pool,
                node: status
                    .and_then(|s| s.status.as_ref())
                    .map(|s| s.node.clone())
                    .unwrap_or_else(|| "-".into()),
                since: status
                    .and_then(|s| s.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "-".into()),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(rows)
}

/// Renders rows as an aligned text table with a header.
pub fn render(rows: &[Row]) -> String {
    let header = ["SERVICE", "VIP", "POOL", "NODE", "SINCE"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| [r.service.as_str(), &r.vips, &r.pool, &r.node, &r.since])
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(cells.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_with_a_header() {
        let rows = vec![Row {
            service: "default/demo".into(),
            vips: "198.18.0.100".into(),
            pool: "default".into(),
            node: "node1".into(),
            since: "2026-11-23T20:00:00Z".into(),
        }];
        let t = render(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SERVICE       VIP"));
        assert_eq!(lines[0].find("VIP"), lines[1].find("198.18.0.100"));
    }
}
