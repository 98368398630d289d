//! The `--json` shapes (documented in docs/cli-json.md, checked against
//! docs/cli-json.schema.json by the tests): snake_case keys, typed values, `null` for none.
//! The CLI owns these structs so its output stays stable while core's types evolve; Docker's
//! own field names appear only inside an `inspect` entry's `metadata`.

use std::path::Path;

use serde::Serialize;

use crate::failure::Res;

/// Prints `v` as pretty JSON on stdout.
pub(crate) fn print(v: &impl Serialize) -> Res<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A path as a JSON string; one that is not UTF-8 is an error naming it (a lossy copy would
/// name a different, missing path), as core's own serializers do.
pub(crate) fn utf8(p: &Path) -> Res<&str> {
    p.to_str().ok_or_else(|| {
        crate::failure::Failure::new(
            ovl2_core::ErrorKind::InvalidArgument,
            format!(
                "the path {} is not valid UTF-8, which JSON cannot carry (the plain output prints it as raw bytes)",
                p.to_string_lossy()
            ),
            Some(22),
        )
    })
}

/// `init`.
#[derive(Serialize)]
pub(crate) struct Home<'a> {
    pub home: &'a str,
}

/// `create`.
#[derive(Serialize)]
pub(crate) struct Created<'a> {
    pub id: &'a str,
    pub parent: Option<&'a str>,
}

/// `rm` and `container rm`: every layer removed, in order.
#[derive(Serialize)]
pub(crate) struct Removed {
    pub removed: Vec<String>,
}

/// `umount`: the layers whose reference was dropped.
#[derive(Serialize)]
pub(crate) struct Released {
    pub released: Vec<String>,
}

/// `cleanup`: the layers that were mounted.
#[derive(Serialize)]
pub(crate) struct Unmounted {
    pub unmounted: Vec<String>,
}

/// One `inspect` entry: Docker's GetMetadata map under `metadata`, with Docker's key names.
#[derive(Serialize)]
pub(crate) struct Inspected {
    pub id: String,
    pub metadata: ovl2_core::Metadata,
}

/// One `du` entry.
#[derive(Serialize)]
pub(crate) struct LayerUsage {
    pub id: String,
    #[serde(flatten)]
    pub usage: ovl2_core::Usage,
}

/// `mount`.
#[derive(Serialize)]
pub(crate) struct Mounted<'a> {
    pub id: &'a str,
    pub path: &'a str,
}

/// `container create`.
#[derive(Serialize)]
pub(crate) struct Container<'a> {
    pub id: &'a str,
    pub init_id: &'a str,
    pub image: &'a str,
}

/// `check`: `repaired` is empty without `--repair`.
#[derive(Serialize)]
pub(crate) struct Checked<'a> {
    pub problems: &'a [ovl2_core::Problem],
    pub repaired: &'a [ovl2_core::Problem],
}

/// `apply`, and each layer of `import`: the layer, what it was applied onto, then the stats.
#[derive(Serialize)]
pub(crate) struct Applied<'a> {
    pub id: &'a str,
    pub parent: Option<&'a str>,
    #[serde(flatten)]
    pub stats: &'a ovl2_core::ApplyStats,
}

/// `diff`'s summary (the tar itself goes to the output).
#[derive(Serialize)]
pub(crate) struct Diffed<'a> {
    pub id: &'a str,
    pub parent: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub tar_bytes: u64,
    pub entries: u64,
}

/// One `changes` entry; `kind` in the same snake_case convention as `check`'s kinds.
#[derive(Serialize)]
pub(crate) struct Change<'a> {
    pub path: &'a str,
    pub kind: &'static str,
}

impl<'a> Change<'a> {
    /// The entry for `c`; a path that is not UTF-8 is an error naming it.
    pub(crate) fn of(c: &'a ovl2_core::Change) -> Res<Change<'a>> {
        let kind = match c.kind {
            ovl2_core::ChangeKind::Add => "add",
            ovl2_core::ChangeKind::Modify => "modify",
            ovl2_core::ChangeKind::Delete => "delete",
        };
        Ok(Change { path: utf8(&c.path)?, kind })
    }
}

/// `diff-size`.
#[derive(Serialize)]
pub(crate) struct DiffSize<'a> {
    pub id: &'a str,
    pub parent: Option<&'a str>,
    pub size: u64,
}

/// `status` as one typed object: core's ordered pairs with snake_case keys ("Supports
/// d_type" → `supports_d_type`), booleans and counts as JSON booleans and numbers, the
/// mount features as a list and the overlay module's parameters as an object. `home` is the
/// store's path exactly (core's pair is for display, lossy when not UTF-8).
pub(crate) fn status(pairs: &[(String, String)], home: &str) -> Ordered {
    use serde_json::Value;
    let mut out = Ordered(Vec::new());
    for (k, v) in pairs {
        let key = k.to_lowercase().replace([' ', '-'], "_");
        let val = match key.as_str() {
            "layers" | "max_depth" => v.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(v.as_str())),
            "home" => Value::from(home),
            "mount_features" => Value::from(v.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>()),
            "overlay_parameters" => Value::Object(
                v.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), Value::from(v))).collect(),
            ),
            _ if v == "true" || v == "false" => Value::Bool(v == "true"),
            _ => Value::from(v.as_str()),
        };
        out.0.push((key, val));
    }
    out
}

/// A JSON object whose keys keep their order (serde_json's own map sorts them).
pub(crate) struct Ordered(Vec<(String, serde_json::Value)>);

impl Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
