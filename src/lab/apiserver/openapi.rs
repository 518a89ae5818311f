//! OpenAPI documents for the served kinds: `/openapi/v3` (a root listing
//! one document per group-version) and `/openapi/v2` (one JSON document).
//!
//! kubectl reads them for `explain` and to decide how `apply` validates:
//! every PATCH operation lists the `fieldValidation` query parameter, so
//! kubectl leaves validation to the server (`fieldValidation=Strict`, see
//! [`super::schema`]). Built-in schemas come from k8s-openapi's schemars
//! impls (with the upstream descriptions); custom resources' from their
//! CRD's `openAPIV3Schema`, with `metadata` pointing at `ObjectMeta` as
//! kube-apiserver publishes it. Pure: the registry in, documents out.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventsEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};

use super::resources::{Registry, ResourceType, Validation};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The definitions of every built-in kind served and what they refer to,
/// keyed by OpenAPI name (`io.k8s.api.core.v1.Service`), with
/// `x-kubernetes-group-version-kind` on each kind. Built once.
pub fn builtin_definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let kinds = [
            (generator.subschema_for::<Namespace>(), "", "Namespace"),
            (generator.subschema_for::<Service>(), "", "Service"),
            (generator.subschema_for::<Node>(), "", "Node"),
            (generator.subschema_for::<Pod>(), "", "Pod"),
            (generator.subschema_for::<CoreEvent>(), "", "Event"),
            (generator.subschema_for::<ConfigMap>(), "", "ConfigMap"),
            (
                generator.subschema_for::<EndpointSlice>(),
                "discovery.k8s.io",
                "EndpointSlice",
            ),
            (
                generator.subschema_for::<Lease>(),
                "coordination.k8s.io",
                "Lease",
            ),
            (
                generator.subschema_for::<EventsEvent>(),
                "events.k8s.io",
                "Event",
            ),
            (
                generator.subschema_for::<CustomResourceDefinition>(),
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
            ),
            (generator.subschema_for::<ObjectMeta>(), "", ""),
        ];
        let mut defs = generator.take_definitions(true);
        for (schema, group, kind) in kinds {
            if kind.is_empty() {
                continue;
            }
            let name = schema
                .as_value()
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            // Every built-in kind served is at version v1.
            let version = "v1";
            if let Some(Value::Object(d)) = defs.get_mut(&name) {
                d.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "kind": kind, "version": version}]),
                );
            }
        }
        defs
    })
}

/// OpenAPI name of a kind: `io.k8s.api.core.v1.Service` for built-ins,
/// reversed group for custom resources (`io.l2lb.v1beta1.IPAddressPool`).
pub fn definition_name(res: &ResourceType) -> String {
    if res.crd_name.is_none() {
        let group = if res.group.is_empty() {
            "core".to_string()
        } else {
            res.group.trim_end_matches(".k8s.io").replace('.', "_")
        };
        let group = match group.as_str() {
            "apiextensions" => {
                return format!(
                    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{}.{}",
                    res.version, res.kind
                );
            }
            g => g.to_string(),
        };
        return format!("io.k8s.api.{group}.{}.{}", res.version, res.kind);
    }
    let reversed: Vec<&str> = res.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), res.version, res.kind)
}

/// A custom resource's published schema: the CRD's, with `metadata` as
/// `ObjectMeta` and the kind's GVK extension.
fn custom_definition(res: &ResourceType) -> Option<Value> {
    let Validation::Custom {
        schema: Some(schema),
    } = &res.validation
    else {
        return None;
    };
    let mut s = schema.clone();
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "metadata".into(),
            json!({
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
                "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
            }),
        );
    }
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": res.group, "kind": res.kind, "version": res.version}]);
    Some(s)
}

/// The schema objects of `res` are validated against, with the
/// definitions its references resolve in: what strict field validation of
/// built-in kinds walks.
pub fn builtin_schema(res: &ResourceType) -> Option<&'static Value> {
    builtin_definitions().get(&definition_name(res))
}

fn path_base(res: &ResourceType, namespaced: bool) -> String {
    let prefix = if res.group.is_empty() {
        format!("/api/{}", res.version)
    } else {
        format!("/apis/{}/{}", res.group, res.version)
    };
    if namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", res.plural)
    } else {
        format!("{prefix}/{}", res.plural)
    }
}

/// The operations of one kind: enough for kubectl's query-parameter
/// verifier (a PATCH with the kind's GVK and `fieldValidation`).
fn paths_for(res: &ResourceType, out: &mut Map<String, Value>) {
    let gvk = json!({"group": res.group, "version": res.version, "kind": res.kind});
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", definition_name(res))});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}});
    let param =
        |name: &str, place: &str| json!({"name": name, "in": place, "schema": {"type": "string"}});
    let field_validation = json!({
        "name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
        "description": "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
    });
    let op = |verb: &str, extra: Vec<Value>| {
        let mut params = vec![param("name", "path")];
        if res.namespaced {
            params.push(param("namespace", "path"));
        }
        params.extend(extra);
        json!({
            "operationId": format!("{verb}{}", res.kind),
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": ok,
        })
    };
    let item = format!("{}/{{name}}", path_base(res, res.namespaced));
    out.insert(
        item,
        json!({
            "get": op("get", vec![]),
            "put": op("put", vec![field_validation.clone()]),
            "patch": op("patch", vec![field_validation.clone()]),
            "delete": op("delete", vec![]),
        }),
    );
    let mut post = op("post", vec![field_validation]);
    if let Some(params) = post.get_mut("parameters").and_then(Value::as_array_mut) {
        params.retain(|p| p["name"] != "name");
    }
    out.insert(path_base(res, res.namespaced), json!({"post": post}));
}

/// The v3 document of one group-version (`""` for core), if served.
pub fn v3_group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<_> = reg
        .all()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    // Every built-in definition: custom resources refer to ObjectMeta and what it refers to.
    let mut schemas = builtin_definitions().clone();
    for t in types {
        paths_for(t, &mut paths);
        if let Some(d) = custom_definition(t) {
            schemas.insert(definition_name(t), d);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn hash_of(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: where each group-version's document lives. The hash in
/// each URL changes with the document, so clients' caches stay right after
/// a CRD changes.
pub fn v3_root(reg: &Registry) -> Value {
    let mut gvs: BTreeMap<String, (String, String)> = BTreeMap::new();
    for t in reg.all() {
        let key = if t.group.is_empty() {
            format!("api/{}", t.version)
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        gvs.insert(key, (t.group.clone(), t.version.clone()));
    }
    let mut paths = Map::new();
    for (key, (g, v)) in gvs {
        if let Some(doc) = v3_group_version(reg, &g, &v) {
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash_of(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v2`: every served kind in one Swagger 2.0 document (JSON).
pub fn v2(reg: &Registry) -> Value {
    let mut paths = Map::new();
    let mut defs = builtin_definitions().clone();
    for t in reg.all() {
        paths_for(t, &mut paths);
        if let Some(d) = custom_definition(t) {
            defs.insert(definition_name(t), d);
        }
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": defs,
    });
    // v2 names the same definitions under another prefix.
    let text = doc
        .to_string()
        .replace("#/components/schemas/", "#/definitions/");
    serde_json::from_str(&text).unwrap_or(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::apiserver::resources::from_crd;

    fn registry() -> Registry {
        let mut r = Registry::with_builtins();
        for crd in crate::api::crds::all() {
            r.insert(from_crd(&crd).unwrap());
        }
        r
    }

    #[test]
    fn builtin_kinds_carry_their_gvk() {
        let defs = builtin_definitions();
        let svc = &defs["io.k8s.api.core.v1.Service"];
        assert_eq!(svc["x-kubernetes-group-version-kind"][0]["kind"], "Service");
        assert!(defs.contains_key(OBJECT_META));
        let lease = &defs["io.k8s.api.coordination.v1.Lease"];
        assert_eq!(
            lease["x-kubernetes-group-version-kind"][0]["group"],
            "coordination.k8s.io"
        );
    }

    #[test]
    fn builtin_schemas_find_unknown_fields() {
        let reg = registry();
        let svc = reg.lookup("", "v1", "services").unwrap();
        let mut obj = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a"},
            "spec": {"foo": 1, "type": "LoadBalancer", "ports": [{"port": 80, "bar": 2}]}});
        let found = crate::lab::apiserver::schema::check(
            builtin_schema(&svc).unwrap(),
            Some(builtin_definitions()),
            &mut obj,
            false,
        );
        assert_eq!(found.unknown, vec!["spec.foo", "spec.ports[0].bar"]);
        assert!(found.causes.is_empty(), "{:?}", found.causes);
    }

    #[test]
    fn custom_resources_publish_their_crd_schema_and_patch_parameters() {
        let reg = registry();
        let doc = v3_group_version(&reg, "l2lb.io", "v1beta1").unwrap();
        let pool = &doc["components"]["schemas"]["io.l2lb.v1beta1.IPAddressPool"];
        assert!(pool["properties"]["spec"]["properties"]["addresses"]["description"].is_string());
        let patch = &doc["paths"]["/apis/l2lb.io/v1beta1/namespaces/{namespace}/ipaddresspools/{name}"]
            ["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "IPAddressPool"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let root = v3_root(&reg);
        assert!(
            root["paths"]["apis/l2lb.io/v1beta1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/l2lb.io/v1beta1?hash=")
        );
        assert!(root["paths"]["api/v1"].is_object());
    }
}
