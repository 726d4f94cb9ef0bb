//! Deploy-time staging of function artifacts into immutable, content-addressed directories.
//!
//! A function's `package.artifact` may be an executable (copied as `bootstrap`), a directory
//! holding an executable `bootstrap` (copied recursively), or a `.zip` holding `bootstrap` at its
//! root, as `cargo lambda build --output-format zip` makes (extracted; `bootstrap` is made
//! executable). The copy lands in `<artifacts_root>/<sha256 prefix>/`, so a deployment is a
//! snapshot: rebuilding the binary afterwards changes nothing until the next deploy, and staging
//! the same content twice reuses the same directory.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Hex digits of the SHA-256 that name a staged directory (64 bits: collisions are not a concern
/// for the artifacts of one installation).
const DIGEST_PREFIX_LEN: usize = 16;
/// Directory symlink loops and absurdly deep trees are refused rather than followed forever.
const MAX_DEPTH: usize = 32;

/// Why an artifact cannot be staged.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error(
        "artifact directory {} has no `bootstrap`; a provided.* function needs an executable named \
         bootstrap at the root of its package",
        path.display()
    )]
    NoBootstrapInDir { path: PathBuf },
    #[error(
        "artifact zip {} has no `bootstrap` at its root (cargo lambda build --output-format zip \
         makes one)",
        path.display()
    )]
    NoBootstrapInZip { path: PathBuf },
    #[error(
        "{} is neither a directory nor a zip; the code of a Node.js or Python function is a \
         directory (the service directory when `package.artifact` is not set) or a zip",
        path.display()
    )]
    NotCode { path: PathBuf },
    #[error("{message}")]
    BadPattern { message: String },
    #[error("{} is not executable; run `chmod +x {}`", path.display(), path.display())]
    NotExecutable { path: PathBuf },
    #[error("artifact zip {} cannot be read: {message}", path.display())]
    BadZip { path: PathBuf, message: String },
    #[error("staging artifact {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_owned(), source }
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Dir,
    Zip,
    /// A Node.js or Python function's code as a zip (`package.artifact` of a packaged Serverless function).
    CodeZip,
}

/// Entries of a service directory that are never part of a function's code: keygate's data
/// directory, Serverless's build output and version control.
const NOT_CODE: &[&str] = &[".keygate", ".serverless", ".git"];

/// Copies a Node.js or Python function's code, `src` (a directory, normally the service
/// directory, or a zip), into `<artifacts_root>/<sha256 prefix>/` and returns that directory,
/// the function's task root. Idempotent as [`stage_artifact`].
///
/// A directory is filtered by `patterns` (Serverless's `package.patterns`: globs relative to
/// `src`, `!` to leave out, applied in order over every file, which is in unless a pattern says
/// otherwise); `.keygate`, `.serverless` and `.git` at its top, and `artifacts_root` if it is
/// inside, are always left out. Its files are kept once each, by content, in
/// `<artifacts_root>/blobs/`, and a staged tree is made of hard links to them: a redeploy whose
/// files did not change copies nothing, and one that changed a handler beside a 100 MB
/// `node_modules` copies only the handler (every file is still read, to hash it).
pub fn stage_code(
    src: &Path,
    artifacts_root: &Path,
    patterns: &[String],
) -> Result<PathBuf, ArtifactError> {
    let meta = fs::metadata(src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ArtifactError::Missing { path: src.to_owned() },
        _ => io_err(src)(e),
    })?;
    // Made first: the walk must recognise it when it is inside `src`.
    fs::create_dir_all(artifacts_root).map_err(io_err(artifacts_root))?;
    open_to_all(artifacts_root, true)?;
    if meta.is_dir() {
        let skip = Skip::new(src, artifacts_root);
        let filter =
            Filter::new(patterns).map_err(|message| ArtifactError::BadPattern { message })?;
        stage_tree(src, artifacts_root, &skip, &filter)
    } else if is_zip(src)? {
        stage(src, artifacts_root, Kind::CodeZip, &Skip::NOTHING)
    } else {
        Err(ArtifactError::NotCode { path: src.to_owned() })
    }
}

/// `package.patterns`, compiled: a file is in unless the last pattern matching it starts with `!`.
struct Filter {
    globs: Vec<(globset::GlobMatcher, bool)>,
}

impl Filter {
    fn new(patterns: &[String]) -> Result<Self, String> {
        let globs = patterns
            .iter()
            .map(|p| {
                let (include, glob) = match p.strip_prefix('!') {
                    Some(rest) => (false, rest),
                    None => (true, p.as_str()),
                };
                globset::GlobBuilder::new(glob)
                    .literal_separator(true)
                    .build()
                    .map(|g| (g.compile_matcher(), include))
                    .map_err(|e| format!("package pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { globs })
    }

    fn includes(&self, rel: &Path) -> bool {
        let mut included = true;
        for (glob, include) in &self.globs {
            if glob.is_match(rel) {
                included = *include;
            }
        }
        included
    }
}

/// Stages a directory of code file by file (see [`stage_code`]).
fn stage_tree(
    src: &Path,
    artifacts_root: &Path,
    skip: &Skip,
    filter: &Filter,
) -> Result<PathBuf, ArtifactError> {
    let mut files = Vec::new();
    collect_files(src, Path::new(""), 0, skip, filter, &mut files)?;
    files.sort();
    let blobs = artifacts_root.join("blobs");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    open_to_all(&blobs, true)?;
    let mut tree = Sha256::new();
    tree.update(b"code-tree\0");
    let mut entries = Vec::with_capacity(files.len());
    for (rel, executable) in files {
        let path = src.join(&rel);
        let mut hasher = Sha256::new();
        hash_file(&mut hasher, &path)?;
        let name = format!("{:x}{}", hasher.finalize(), if executable { "x" } else { "" });
        let blob = blobs.join(&name);
        if !blob.is_file() {
            // Copied beside and renamed: a blob is whole or absent.
            let tmp = blobs.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            copy_file(&path, &tmp, false)?;
            open_to_all(&tmp, executable)?;
            if let Err(e) = fs::rename(&tmp, &blob) {
                let _ = fs::remove_file(&tmp);
                if !blob.is_file() {
                    return Err(io_err(&blob)(e));
                }
            }
        }
        tree.update(rel.to_string_lossy().as_bytes());
        tree.update(b"\0");
        tree.update(name.as_bytes());
        tree.update(b"\0");
        entries.push((rel, blob));
    }
    let digest = format!("{:x}", tree.finalize());
    let target = artifacts_root.join(&digest[..DIGEST_PREFIX_LEN]);
    if target.is_dir() {
        return Ok(target);
    }
    let tmp = artifacts_root.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    let built = (|| {
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        open_to_all(&tmp, true)?;
        for (rel, blob) in &entries {
            let to = tmp.join(rel);
            if let Some(parent) = to.parent()
                && !parent.is_dir()
            {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
                let mut dir = parent;
                while dir != tmp {
                    open_to_all(dir, true)?;
                    dir = dir.parent().unwrap_or(&tmp);
                }
            }
            // A hard link shares the blob (same modes); a copy where links are not possible.
            if fs::hard_link(blob, &to).is_err() {
                fs::copy(blob, &to).map_err(io_err(&to))?;
            }
        }
        Ok(())
    })();
    if let Err(err) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }
    match fs::rename(&tmp, &target) {
        Ok(()) => Ok(target),
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(target)
        }
        Err(err) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err(&target)(err))
        }
    }
}

/// The files of `root/rel` that the filter takes, with their execute bit, following symlinks.
fn collect_files(
    root: &Path,
    rel: &Path,
    depth: usize,
    skip: &Skip,
    filter: &Filter,
    out: &mut Vec<(PathBuf, bool)>,
) -> Result<(), ArtifactError> {
    let dir = root.join(rel);
    if depth > MAX_DEPTH {
        return Err(io_err(&dir)(io::Error::other("directory tree too deep (symlink loop?)")));
    }
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        if skip.skips(&rel, &path) {
            continue;
        }
        let Ok(meta) = fs::metadata(&path) else { continue };
        if meta.is_dir() {
            collect_files(root, &rel, depth + 1, skip, filter, out)?;
        } else if meta.is_file() && filter.includes(&rel) {
            out.push((rel, is_executable(&meta)));
        }
    }
    Ok(())
}

/// What a directory copy leaves out: top-level names, and one directory anywhere (the
/// artifacts, when the data directory is inside the service directory).
struct Skip {
    top: &'static [&'static str],
    dir: Option<PathBuf>,
}

impl Skip {
    const NOTHING: Skip = Skip { top: &[], dir: None };

    fn new(src: &Path, artifacts_root: &Path) -> Self {
        let dir = fs::canonicalize(artifacts_root)
            .ok()
            .filter(|root| fs::canonicalize(src).is_ok_and(|src| root.starts_with(src)));
        Skip { top: NOT_CODE, dir }
    }

    fn skips(&self, rel: &Path, path: &Path) -> bool {
        let top = rel.components().count() == 1
            && rel.to_str().is_some_and(|name| self.top.contains(&name));
        top || self.dir.as_ref().is_some_and(|dir| fs::canonicalize(path).is_ok_and(|p| p == *dir))
    }
}

/// Copies the artifact `src` into `<artifacts_root>/<sha256 prefix>/` (see the module docs) and
/// returns that directory, which holds an executable `bootstrap`. Idempotent: the same content
/// gives the same directory, and an existing one is reused as is.
pub fn stage_artifact(src: &Path, artifacts_root: &Path) -> Result<PathBuf, ArtifactError> {
    let meta = fs::metadata(src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ArtifactError::Missing { path: src.to_owned() },
        _ => io_err(src)(e),
    })?;
    let kind = if meta.is_dir() {
        let bootstrap = src.join("bootstrap");
        match fs::metadata(&bootstrap) {
            Ok(m) if m.is_file() && is_executable(&m) => {}
            Ok(m) if m.is_file() => return Err(ArtifactError::NotExecutable { path: bootstrap }),
            _ => return Err(ArtifactError::NoBootstrapInDir { path: src.to_owned() }),
        }
        Kind::Dir
    } else if is_zip(src)? {
        Kind::Zip
    } else if is_executable(&meta) {
        Kind::File
    } else {
        return Err(ArtifactError::NotExecutable { path: src.to_owned() });
    };
    stage(src, artifacts_root, kind, &Skip::NOTHING)
}

/// Stages `src` of `kind`: hashes it, and copies it unless that content is staged already.
fn stage(
    src: &Path,
    artifacts_root: &Path,
    kind: Kind,
    skip: &Skip,
) -> Result<PathBuf, ArtifactError> {
    let mut hasher = Sha256::new();
    match kind {
        Kind::File => {
            hasher.update(b"file\0");
            hash_file(&mut hasher, src)?;
        }
        Kind::Zip => {
            hasher.update(b"zip\0");
            hash_file(&mut hasher, src)?;
        }
        Kind::Dir => {
            hasher.update(b"dir\0");
            hash_dir(&mut hasher, src, Path::new(""), 0, skip)?;
        }
        Kind::CodeZip => {
            hasher.update(b"code-zip\0");
            hash_file(&mut hasher, src)?;
        }
    }
    let digest = format!("{:x}", hasher.finalize());
    let target = artifacts_root.join(&digest[..DIGEST_PREFIX_LEN]);
    // A staged directory appears whole (renamed into place); a bootstrap artifact must hold its
    // bootstrap (an interrupted manual copy would not).
    let complete = |target: &Path| match kind {
        Kind::File | Kind::Dir | Kind::Zip => target.join("bootstrap").is_file(),
        Kind::CodeZip => target.is_dir(),
    };
    if complete(&target) {
        return Ok(target);
    }

    // Build in a private temporary directory and rename it into place, so a half-copied
    // artifact is never visible and two concurrent deploys of the same content cannot clash.
    fs::create_dir_all(artifacts_root).map_err(io_err(artifacts_root))?;
    open_to_all(artifacts_root, true)?;
    let tmp = artifacts_root.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let filled = match kind {
        Kind::File => copy_file(src, &tmp.join("bootstrap"), true),
        Kind::Dir => copy_dir(src, &tmp, Path::new(""), 0, skip),
        Kind::Zip => extract_zip(src, &tmp, true),
        Kind::CodeZip => extract_zip(src, &tmp, false),
    }
    .and_then(|()| open_tree_to_all(&tmp, 0));
    if let Err(err) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }
    if target.exists() && !complete(&target) {
        // Left over from an interrupted manual copy; the content address says what belongs here.
        let _ = fs::remove_dir_all(&target);
    }
    match fs::rename(&tmp, &target) {
        Ok(()) => Ok(target),
        Err(_) if complete(&target) => {
            // Another deploy staged the same content first.
            let _ = fs::remove_dir_all(&tmp);
            Ok(target)
        }
        Err(err) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err(&target)(err))
        }
    }
}

/// Whether anyone may execute the file.
#[cfg(unix)]
pub(crate) fn is_executable(meta: &Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

/// Whether anyone may execute the file (no execute bit outside Unix).
#[cfg(not(unix))]
pub(crate) fn is_executable(_meta: &Metadata) -> bool {
    true
}

fn is_zip(path: &Path) -> Result<bool, ArtifactError> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        return Ok(true);
    }
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(io_err(path))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"PK\x03\x04"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<(), ArtifactError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    io::copy(&mut file, hasher).map_err(io_err(path))?;
    Ok(())
}

/// Hashes a tree: sorted relative paths, kinds, execute bits and contents.
fn hash_dir(
    hasher: &mut Sha256,
    root: &Path,
    rel: &Path,
    depth: usize,
    skip: &Skip,
) -> Result<(), ArtifactError> {
    let dir = root.join(rel);
    if depth > MAX_DEPTH {
        return Err(io_err(&dir)(io::Error::other("directory tree too deep (symlink loop?)")));
    }
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&dir))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        if skip.skips(&rel, &path) {
            continue;
        }
        let meta = fs::metadata(&path).map_err(io_err(&path))?;
        hasher.update(rel.to_string_lossy().as_bytes());
        if meta.is_dir() {
            hasher.update(b"\0d\0");
            hash_dir(hasher, root, &rel, depth + 1, skip)?;
        } else if meta.is_file() {
            hasher.update(if is_executable(&meta) { b"\0x\0" } else { b"\0f\0" });
            hasher.update(meta.len().to_le_bytes());
            hash_file(hasher, &path)?;
        }
        // Sockets, fifos and devices are not part of a package and are skipped.
    }
    Ok(())
}

fn copy_file(src: &Path, dst: &Path, executable: bool) -> Result<(), ArtifactError> {
    // fs::copy keeps the permission bits.
    fs::copy(src, dst).map_err(io_err(src))?;
    if executable {
        set_executable(dst)?;
    }
    Ok(())
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    rel: &Path,
    depth: usize,
    skip: &Skip,
) -> Result<(), ArtifactError> {
    if depth > MAX_DEPTH {
        return Err(io_err(src)(io::Error::other("directory tree too deep (symlink loop?)")));
    }
    for entry in fs::read_dir(src).map_err(io_err(src))? {
        let entry = entry.map_err(io_err(src))?;
        let from = entry.path();
        let rel = rel.join(entry.file_name());
        if skip.skips(&rel, &from) {
            continue;
        }
        let to = dst.join(entry.file_name());
        // Follow symlinks: the snapshot must not depend on files outside it.
        let meta = fs::metadata(&from).map_err(io_err(&from))?;
        if meta.is_dir() {
            fs::create_dir(&to).map_err(io_err(&to))?;
            copy_dir(&from, &to, &rel, depth + 1, skip)?;
        } else if meta.is_file() {
            copy_file(&from, &to, false)?;
        }
    }
    Ok(())
}

fn extract_zip(src: &Path, dst: &Path, needs_bootstrap: bool) -> Result<(), ArtifactError> {
    let bad = |message: String| ArtifactError::BadZip { path: src.to_owned(), message };
    let file = File::open(src).map_err(io_err(src))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    if needs_bootstrap
        && !archive.file_names().any(|name| name == "bootstrap" || name == "./bootstrap")
    {
        return Err(ArtifactError::NoBootstrapInZip { path: src.to_owned() });
    }
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| bad(e.to_string()))?;
        // enclosed_name refuses absolute paths and `..` (zip-slip).
        let Some(rel) = entry.enclosed_name() else {
            return Err(bad(format!("entry {:?} points outside the archive", entry.name())));
        };
        let out = dst.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(io_err(&out))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut file = File::create(&out).map_err(io_err(&out))?;
        io::copy(&mut entry, &mut file).map_err(|e| bad(format!("{}: {e}", rel.display())))?;
        drop(file);
        let executable = (needs_bootstrap && rel == Path::new("bootstrap"))
            || entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        if executable {
            set_executable(&out)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<(), ArtifactError> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = fs::metadata(path).map_err(io_err(path))?.permissions();
    perms.set_mode(perms.mode() | 0o755);
    fs::set_permissions(path, perms).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> Result<(), ArtifactError> {
    Ok(())
}

/// Makes a staged tree readable by everyone (directories and executables 0755, other files
/// 0644), whatever the umask: functions may run as another user than keygate (`nobody` when
/// keygate runs as root), who reaches the artifacts through the data directory's search bit
/// and must read them. Nothing else in the data directory is opened up.
fn open_tree_to_all(dir: &Path, depth: usize) -> Result<(), ArtifactError> {
    if depth > MAX_DEPTH {
        return Err(io_err(dir)(io::Error::other("directory tree too deep")));
    }
    open_to_all(dir, true)?;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            open_tree_to_all(&path, depth + 1)?;
        } else if meta.is_file() {
            open_to_all(&path, is_executable(&meta))?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn open_to_all(path: &Path, searchable: bool) -> Result<(), ArtifactError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if searchable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn open_to_all(_path: &Path, _searchable: bool) -> Result<(), ArtifactError> {
    Ok(())
}
