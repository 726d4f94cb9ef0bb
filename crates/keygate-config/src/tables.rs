//! `resources`: the CloudFormation a service adds to its stack. keygate takes every
//! `AWS::DynamoDB::Table` (the seed's candidates table) as a [`TableSpec`] it creates on its
//! DynamoDB engine at deploy; other resource types, `Outputs` and `extensions` are noted as
//! ignored. A table is validated as CloudFormation would before it reaches DynamoDB: attribute
//! and key types, one `HASH` key, key attributes defined, index names unique.

use keygate_types::{IndexSpec, KeySchema, TableSpec};

use crate::ctx::{Ctx, Section};
use crate::diag::FieldPath;
use crate::yaml::{Node, quote};

const RESOURCES: Section = Section {
    what: "key in resources",
    used: &["Resources"],
    ignored: &["Outputs", "extensions", "Conditions", "Mappings", "Transform", "Description"],
};

const RESOURCE: Section = Section {
    what: "key of a resource",
    used: &["Type", "Properties", "DeletionPolicy"],
    ignored: &["UpdateReplacePolicy", "DependsOn", "Condition", "Metadata", "UpdatePolicy"],
};

const TABLE: Section = Section {
    what: "property of an AWS::DynamoDB::Table",
    used: &[
        "TableName",
        "AttributeDefinitions",
        "KeySchema",
        "BillingMode",
        "ProvisionedThroughput",
        "StreamSpecification",
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
    ],
    ignored: &[
        "TimeToLiveSpecification",
        "SSESpecification",
        "PointInTimeRecoverySpecification",
        "Tags",
        "ContributorInsightsSpecification",
        "DeletionProtectionEnabled",
        "TableClass",
        "KinesisStreamSpecification",
        "ImportSourceSpecification",
        "OnDemandThroughput",
        "WarmThroughput",
        "ResourcePolicy",
    ],
};

const INDEX: Section = Section {
    what: "key of a secondary index",
    used: &["IndexName", "KeySchema", "Projection", "ProvisionedThroughput"],
    ignored: &["ContributorInsightsSpecification", "OnDemandThroughput", "WarmThroughput"],
};

const STREAM_VIEW_TYPES: &[&str] = &["NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY"];

/// The naming rule of DynamoDB tables and indexes: 3 to 255 of `[A-Za-z0-9_.-]`.
fn valid_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Ctx<'_> {
    /// The DynamoDB tables of `resources`; `service` and `stage` name a table without
    /// `TableName`.
    pub(crate) fn resources(&mut self, node: &Node, service: &str, stage: &str) -> Vec<TableSpec> {
        let path = FieldPath::root().key("resources");
        let mut tables = Vec::new();
        let Some(entries) = self.map(node, &path, "a map with Resources") else { return tables };
        for e in &entries {
            let p = path.key(&e.key);
            if e.key != "Resources" {
                self.other_key(&e.key, e.key_mark, &p, &RESOURCES);
                continue;
            }
            let Some(resources) = self.map(&e.value, &p, "a map of resources by logical id") else {
                continue;
            };
            for r in &resources {
                let rp = p.key(&r.key);
                if let Some(table) = self.resource(&r.key, &r.value, &rp, service, stage) {
                    if let Some(other) =
                        tables.iter().find(|t: &&TableSpec| t.table_name == table.table_name)
                    {
                        let message = format!(
                            "table name {} is also the name of resource {}; each table needs its \
                             own name",
                            quote(&table.table_name),
                            other.logical_id
                        );
                        self.error(r.key_mark, &rp, message);
                        continue;
                    }
                    tables.push(table);
                }
            }
        }
        tables
    }

    /// One resource: a table, or `None` (another type is noted as ignored).
    fn resource(
        &mut self,
        logical_id: &str,
        node: &Node,
        path: &FieldPath,
        service: &str,
        stage: &str,
    ) -> Option<TableSpec> {
        let entries = self.map(node, path, "a resource (a map with Type and Properties)")?;
        let ty = match entries.iter().find(|e| e.key == "Type") {
            Some(e) => self.string(&e.value, &path.key("Type"), "a resource type")?,
            None => {
                self.error(node.mark, &path.key("Type"), "missing; every resource has a Type");
                return None;
            }
        };
        if ty != "AWS::DynamoDB::Table" {
            self.ignore(path);
            return None;
        }
        let mut retain = false;
        let mut properties = None;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "Type" => {}
                "Properties" => properties = Some(e),
                "DeletionPolicy" => {
                    match self.string(&e.value, &p, "Delete, Retain or Snapshot").as_deref() {
                        Some("Retain" | "RetainExceptOnCreate" | "Snapshot") => retain = true,
                        Some("Delete") | None => {}
                        Some(other) => {
                            let message = format!(
                                "expected Delete, Retain or Snapshot, found {}",
                                quote(other)
                            );
                            self.error(e.value.mark, &p, message);
                        }
                    }
                }
                k => self.other_key(k, e.key_mark, &p, &RESOURCE),
            }
        }
        let Some(properties) = properties else {
            self.error(
                node.mark,
                &path.key("Properties"),
                "missing; a table needs Properties with AttributeDefinitions and KeySchema",
            );
            return None;
        };
        self.table(logical_id, properties, path, service, stage, retain)
    }

    fn table(
        &mut self,
        logical_id: &str,
        properties: &crate::yaml::Entry,
        path: &FieldPath,
        service: &str,
        stage: &str,
        retain: bool,
    ) -> Option<TableSpec> {
        let path = path.key("Properties");
        let entries = self.map(&properties.value, &path, "the table's properties")?;
        let mut table_name = None;
        let mut attributes = None;
        let mut key = None;
        let mut billing: Option<(String, crate::diag::Mark)> = None;
        let mut provisioned = None;
        let mut stream_view_type = None;
        let mut global_indexes = Vec::new();
        let mut local_indexes = Vec::new();
        let mut ok = true;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "TableName" => {
                    table_name = self.string(&e.value, &p, "a table name");
                    if let Some(name) = &table_name
                        && !valid_name(name)
                    {
                        let message = format!(
                            "{} is not a DynamoDB table name: 3 to 255 letters, digits, `_`, `.` \
                             and `-`",
                            quote(name)
                        );
                        self.error(e.value.mark, &p, message);
                        ok = false;
                    }
                }
                "AttributeDefinitions" => attributes = self.attributes(&e.value, &p),
                "KeySchema" => key = self.key_schema(&e.value, &p),
                "BillingMode" => {
                    let v = self.string(&e.value, &p, "PAY_PER_REQUEST or PROVISIONED");
                    match v.as_deref() {
                        Some(m @ ("PAY_PER_REQUEST" | "PROVISIONED")) => {
                            billing = Some((m.to_owned(), e.value.mark));
                        }
                        Some(other) => {
                            let message = format!(
                                "expected PAY_PER_REQUEST or PROVISIONED, found {}",
                                quote(other)
                            );
                            self.error(e.value.mark, &p, message);
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                "ProvisionedThroughput" => provisioned = self.throughput(&e.value, &p),
                "StreamSpecification" => stream_view_type = self.stream(&e.value, &p),
                "GlobalSecondaryIndexes" => global_indexes = self.indexes(&e.value, &p, true),
                "LocalSecondaryIndexes" => local_indexes = self.indexes(&e.value, &p, false),
                k => self.other_key(k, e.key_mark, &p, &TABLE),
            }
        }
        let missing = |cx: &mut Self, name: &str, example: &str| {
            cx.error(properties.key_mark, &path.key(name), format!("missing; e.g. {example}"));
        };
        if !entries.iter().any(|e| e.key == "AttributeDefinitions") {
            missing(self, "AttributeDefinitions", "`- {AttributeName: id, AttributeType: S}`");
        }
        if !entries.iter().any(|e| e.key == "KeySchema") {
            missing(self, "KeySchema", "`- {AttributeName: id, KeyType: HASH}`");
        }
        let (attributes, key) = (attributes?, key?);
        // Provisioned unless PAY_PER_REQUEST, as CloudFormation: then throughput is required.
        let provisioned = match billing {
            Some((mode, _)) if mode == "PAY_PER_REQUEST" => None,
            _ => match provisioned {
                Some(p) => Some(p),
                None => {
                    missing(
                        self,
                        "ProvisionedThroughput",
                        "`{ReadCapacityUnits: 1, WriteCapacityUnits: 1}`, or `BillingMode: \
                         PAY_PER_REQUEST`",
                    );
                    return None;
                }
            },
        };
        // Every key attribute is defined, and every defined attribute is a key somewhere, as
        // DynamoDB requires.
        let mut used: Vec<&str> = vec![key.0.hash.as_str()];
        used.extend(key.0.range.as_deref());
        for index in global_indexes.iter().chain(&local_indexes) {
            used.push(&index.key.hash);
            used.extend(index.key.range.as_deref());
        }
        for name in &used {
            if !attributes.0.iter().any(|(n, _)| n == name) {
                let message = format!(
                    "the key attribute {} is not in AttributeDefinitions; add `- {{AttributeName: \
                     {name}, AttributeType: S}}` (or N, B)",
                    quote(name)
                );
                self.error(key.1, &path.key("KeySchema"), message);
                ok = false;
            }
        }
        for (name, _) in &attributes.0 {
            if !used.contains(&name.as_str()) {
                let message = format!(
                    "the attribute {} is defined but is no key of the table or an index; \
                     DynamoDB refuses that: define only key attributes",
                    quote(name)
                );
                self.error(attributes.1, &path.key("AttributeDefinitions"), message);
                ok = false;
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for index in global_indexes.iter().chain(&local_indexes) {
            if names.contains(&index.name.as_str()) {
                let message = format!("two indexes are named {}", quote(&index.name));
                self.error(properties.key_mark, &path, message);
                ok = false;
            }
            names.push(&index.name);
        }
        for index in &local_indexes {
            if index.key.hash != key.0.hash {
                let message = format!(
                    "local index {} must have the table's partition key {} as its HASH key",
                    quote(&index.name),
                    quote(&key.0.hash)
                );
                self.error(properties.key_mark, &path.key("LocalSecondaryIndexes"), message);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(TableSpec {
            logical_id: logical_id.to_owned(),
            table_name: table_name.unwrap_or_else(|| format!("{service}-{stage}-{logical_id}")),
            retain,
            attributes: attributes.0,
            key: key.0,
            provisioned,
            stream_view_type,
            global_indexes,
            local_indexes,
        })
    }

    /// `AttributeDefinitions`, with the list's position.
    fn attributes(
        &mut self,
        node: &Node,
        path: &FieldPath,
    ) -> Option<(Vec<(String, String)>, crate::diag::Mark)> {
        let items = self.list(node, path, "a list of {AttributeName, AttributeType}")?;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = path.index(i);
            let Some((name, ty)) = self.pair(item, &p, "AttributeName", "AttributeType") else {
                ok = false;
                continue;
            };
            if !matches!(ty.as_str(), "S" | "N" | "B") {
                let message = format!("expected S, N or B, found {}", quote(&ty));
                let at = item.get("AttributeType").map_or(item.mark, |v| v.mark);
                self.error(at, &p.key("AttributeType"), message);
                ok = false;
            } else if out.iter().any(|(n, _)| *n == name) {
                self.error(
                    item.mark,
                    &p,
                    format!("the attribute {} is defined twice", quote(&name)),
                );
                ok = false;
            } else {
                out.push((name, ty));
            }
        }
        ok.then_some((out, node.mark))
    }

    /// A `KeySchema`: one `HASH` element, then at most one `RANGE`.
    fn key_schema(
        &mut self,
        node: &Node,
        path: &FieldPath,
    ) -> Option<(KeySchema, crate::diag::Mark)> {
        let items = self.list(node, path, "a list of {AttributeName, KeyType}")?;
        let mut hash = None;
        let mut range = None;
        for (i, item) in items.iter().enumerate() {
            let p = path.index(i);
            let (name, ty) = self.pair(item, &p, "AttributeName", "KeyType")?;
            match (ty.as_str(), i) {
                ("HASH", 0) => hash = Some(name),
                ("RANGE", 1) => range = Some(name),
                ("HASH" | "RANGE", _) => {
                    self.error(
                        item.mark,
                        &p,
                        "a key schema is one HASH element, then at most one RANGE element",
                    );
                    return None;
                }
                (other, _) => {
                    let message = format!("expected HASH or RANGE, found {}", quote(other));
                    let at = item.get("KeyType").map_or(item.mark, |v| v.mark);
                    self.error(at, &p.key("KeyType"), message);
                    return None;
                }
            }
        }
        match hash {
            Some(hash) => Some((KeySchema { hash, range }, node.mark)),
            None => {
                self.error(
                    node.mark,
                    path,
                    "expected a HASH element first, e.g. `- {AttributeName: id, KeyType: HASH}`",
                );
                None
            }
        }
    }

    /// A map of exactly two string fields (`{AttributeName: id, KeyType: HASH}`).
    fn pair(
        &mut self,
        node: &Node,
        path: &FieldPath,
        a: &str,
        b: &str,
    ) -> Option<(String, String)> {
        let entries = self.map(node, path, &format!("a map with {a} and {b}"))?;
        let (mut first, mut second) = (None, None);
        for e in &entries {
            let p = path.key(&e.key);
            if e.key == a {
                first = self.string(&e.value, &p, "a string");
            } else if e.key == b {
                second = self.string(&e.value, &p, "a string");
            } else {
                let message = format!("unknown key; expected {a} and {b}");
                self.error(e.key_mark, &p, message);
                return None;
            }
        }
        for (name, value) in [(a, &first), (b, &second)] {
            if value.is_none() && !entries.iter().any(|e| e.key == name) {
                self.error(node.mark, &path.key(name), "missing");
            }
        }
        Some((first?, second?))
    }

    fn throughput(&mut self, node: &Node, path: &FieldPath) -> Option<(u64, u64)> {
        let entries =
            self.map(node, path, "a map with ReadCapacityUnits and WriteCapacityUnits")?;
        let (mut read, mut write) = (None, None);
        for e in &entries {
            let p = path.key(&e.key);
            let what = "a whole number of at least 1";
            match e.key.as_str() {
                "ReadCapacityUnits" => read = self.integer(&e.value, &p, what, 1..=i64::MAX),
                "WriteCapacityUnits" => write = self.integer(&e.value, &p, what, 1..=i64::MAX),
                _ => {
                    let message = "unknown key; expected ReadCapacityUnits and WriteCapacityUnits";
                    self.error(e.key_mark, &p, message);
                    return None;
                }
            }
        }
        for (name, value) in [("ReadCapacityUnits", read), ("WriteCapacityUnits", write)] {
            if value.is_none() && !entries.iter().any(|e| e.key == name) {
                self.error(node.mark, &path.key(name), "missing");
            }
        }
        Some((read? as u64, write? as u64))
    }

    fn stream(&mut self, node: &Node, path: &FieldPath) -> Option<String> {
        let entries = self.map(node, path, "a map with StreamViewType")?;
        let mut view = None;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "StreamViewType" => {
                    let v = self.string(&e.value, &p, "a stream view type")?;
                    if STREAM_VIEW_TYPES.contains(&v.as_str()) {
                        view = Some(v);
                    } else {
                        let message = format!(
                            "expected one of {}, found {}",
                            STREAM_VIEW_TYPES.join(", "),
                            quote(&v)
                        );
                        self.error(e.value.mark, &p, message);
                        return None;
                    }
                }
                "ResourcePolicy" => self.ignore(&p),
                _ => {
                    self.error(e.key_mark, &p, "unknown key; expected StreamViewType");
                    return None;
                }
            }
        }
        if view.is_none() {
            self.error(node.mark, &path.key("StreamViewType"), "missing; e.g. NEW_AND_OLD_IMAGES");
        }
        view
    }

    fn indexes(&mut self, node: &Node, path: &FieldPath, global: bool) -> Vec<IndexSpec> {
        let Some(items) = self.list(node, path, "a list of indexes") else { return Vec::new() };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = path.index(i);
            if let Some(index) = self.index(item, &p, global) {
                out.push(index);
            }
        }
        out
    }

    fn index(&mut self, node: &Node, path: &FieldPath, global: bool) -> Option<IndexSpec> {
        let entries = self.map(node, path, "an index (IndexName, KeySchema, Projection)")?;
        let mut name = None;
        let mut key = None;
        let mut projection = None;
        let mut non_key_attributes = Vec::new();
        let mut provisioned = None;
        for e in &entries {
            let p = path.key(&e.key);
            match e.key.as_str() {
                "IndexName" => {
                    name = self.string(&e.value, &p, "an index name");
                    if let Some(n) = &name
                        && !valid_name(n)
                    {
                        let message = format!(
                            "{} is not a DynamoDB index name: 3 to 255 letters, digits, `_`, `.` \
                             and `-`",
                            quote(n)
                        );
                        self.error(e.value.mark, &p, message);
                        return None;
                    }
                }
                "KeySchema" => key = self.key_schema(&e.value, &p).map(|(k, _)| k),
                "Projection" => {
                    let entries = self.map(&e.value, &p, "a map with ProjectionType")?;
                    for pe in &entries {
                        let pp = p.key(&pe.key);
                        match pe.key.as_str() {
                            "ProjectionType" => {
                                let v = self.string(&pe.value, &pp, "ALL, KEYS_ONLY or INCLUDE")?;
                                if !matches!(v.as_str(), "ALL" | "KEYS_ONLY" | "INCLUDE") {
                                    let message = format!(
                                        "expected ALL, KEYS_ONLY or INCLUDE, found {}",
                                        quote(&v)
                                    );
                                    self.error(pe.value.mark, &pp, message);
                                    return None;
                                }
                                projection = Some(v);
                            }
                            "NonKeyAttributes" => {
                                non_key_attributes = self.strings(
                                    &pe.value,
                                    &pp,
                                    "a list of attribute names",
                                    false,
                                )?;
                            }
                            _ => {
                                let message = "unknown key; expected ProjectionType and \
                                               NonKeyAttributes";
                                self.error(pe.key_mark, &pp, message);
                                return None;
                            }
                        }
                    }
                }
                "ProvisionedThroughput" if global => provisioned = self.throughput(&e.value, &p),
                k => self.other_key(k, e.key_mark, &p, &INDEX),
            }
        }
        for (field, present) in [
            ("IndexName", name.is_some()),
            ("KeySchema", key.is_some()),
            ("Projection", projection.is_some()),
        ] {
            if !present && !entries.iter().any(|e| e.key == field) {
                self.error(node.mark, &path.key(field), "missing");
            }
        }
        Some(IndexSpec {
            name: name?,
            key: key?,
            projection: projection?,
            non_key_attributes,
            provisioned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn table_names_follow_dynamodbs_rule() {
        for ok in ["candidate-dev", "a.b_c", "abc"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["ab", "with space", "candidate/dev", ""] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
