//! Archives on the host: zstd compression of the tars the export helper writes, the size and
//! sha256 check of an archive against the manifest before an import, and the checks of a layer
//! cache's blobs. The builder image has `tar` but no `zstd`: the export helper writes plain tars,
//! and the import leaves the decompression to BuildKit (its `ADD` unpacks zstd tars).

use std::{
    fs,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::key::hex;

/// zstd level 3 (zstd's default), by measurement on the real archives of the workspace strategy
/// (target-workspace 171.6 MB, cargo-home 19.0 MB; `zstd -q -T1 -<level> -c <tar> | wc -c`, one
/// core, a shared 2-core machine): target 61.2 MB in 1.0 s at 1, 54.3 MB in 1.3 s at 3, 49.2 MB
/// in 11.5 s at 9, 42.4 MB in 186 s at 19; the cargo home 6.7-6.8 MB at 1-3, 6.6 MB in 18 s at
/// 19. Level 1 saves 0.3 s for 7 MB more to move; 9 and 19 cost 10-185 s for 5-12 MB.
pub const LEVEL: i32 = 3;

/// What [`compress`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: String,
    pub bytes: u64,
    pub tar_bytes: u64,
}

/// Compresses `tar` into `out`; the sha256 is that of the compressed file.
pub fn compress(tar: &Path, out: &Path, level: i32) -> anyhow::Result<Written> {
    let input = fs::File::open(tar).with_context(|| format!("cannot read {}", tar.display()))?;
    let mut encoder = encoder(out, level)?;
    let tar_bytes = io::copy(&mut BufReader::new(input), &mut encoder)
        .with_context(|| format!("cannot compress {}", tar.display()))?;
    finish(encoder, tar_bytes)
}

type Encoder = zstd::Encoder<'static, HashingWriter<BufWriter<fs::File>>>;

/// A zstd encoder into a new file `out` (never one written through: `out` may be a link to
/// another entry's archive) that hashes what it writes; on every core (the export runs after
/// the builds, or beside their image export).
fn encoder(out: &Path, level: i32) -> anyhow::Result<Encoder> {
    let _ = fs::remove_file(out);
    let file = fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let hashing = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::Encoder::new(hashing, level)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u32;
    if workers > 1 {
        encoder.multithread(workers)?;
    }
    Ok(encoder)
}

/// Ends the zstd stream, syncs the file, and says what was written (`tar_bytes` fed in).
fn finish(encoder: Encoder, tar_bytes: u64) -> anyhow::Result<Written> {
    let mut hashing = encoder.finish()?;
    hashing.inner.flush()?;
    hashing
        .inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(Written {
        sha256: hex(&hashing.hasher.finalize()),
        bytes: hashing.bytes,
        tar_bytes,
    })
}

/// A tar larger than this travels in parts of about this size (at most [`MAX_PARTS`]): the
/// import helper unpacks the parts side by side, one ADD each.
pub const PART_BYTES: u64 = 96 << 20;
pub const MAX_PARTS: usize = 8;

/// How many parts a tar of `tar_bytes` is split into.
pub fn parts_for(tar_bytes: u64) -> usize {
    (tar_bytes.div_ceil(PART_BYTES) as usize).clamp(1, MAX_PARTS)
}

/// Compresses `tar` into the archives `outs`, each a whole tar of its own: the entries go in
/// their order, each part taking about an equal share of the bytes, and a hard link goes with
/// the file it links to (a tar can only link to a file it carries). Returns what was written,
/// one per part that got an entry, in order: those are the first of `outs` (parts are filled
/// one after the other, so only the last ones can be left out; they are not written).
///
/// Reads GNU and ustar tars: the long-name (`L`, `K`) and pax (`x`, `g`) headers travel with
/// the entry they precede. A tar it does not read whole (a header whose checksum is wrong, a
/// sparse file, a pax size, a truncated tar) travels as one part, as it is.
pub fn compress_split(tar: &Path, outs: &[PathBuf], level: i32) -> anyhow::Result<Vec<Written>> {
    let out = outs.first().context("no archive to write")?;
    if outs.len() > 1 {
        match split_into(tar, outs, level) {
            Ok(written) => return Ok(written),
            Err(e) => {
                tracing::debug!("{} travels in one part: {e:#}", tar.display());
                for o in outs {
                    let _ = fs::remove_file(o);
                }
            }
        }
    }
    Ok(vec![compress(tar, out, level)?])
}

fn split_into(tar: &Path, outs: &[PathBuf], level: i32) -> anyhow::Result<Vec<Written>> {
    let total = fs::metadata(tar)?.len();
    let share = total.div_ceil(outs.len() as u64).max(1);
    let mut input = BufReader::with_capacity(1 << 20, fs::File::open(tar)?);
    let mut parts: Vec<(Encoder, u64)> = Vec::new();
    let open = |out: &Path| encoder(out, level);
    // the part each regular file went to, for the hard links to it
    let mut part_of: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    let mut offset = 0u64;
    let mut block = [0u8; 512];
    // extension headers (and their data) waiting for the entry they describe
    let mut pending: Vec<u8> = Vec::new();
    let (mut long_name, mut long_link): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let mut entry_start = 0u64;
    loop {
        if pending.is_empty() {
            entry_start = offset;
        }
        input
            .read_exact(&mut block)
            .context("the tar ends without its end-of-archive blocks")?;
        offset += 512;
        if block.iter().all(|b| *b == 0) {
            anyhow::ensure!(pending.is_empty(), "the tar ends inside an entry's headers");
            break;
        }
        anyhow::ensure!(
            header_checksum_ok(&block),
            "a header at byte {} has a wrong checksum",
            offset - 512
        );
        let size = header_size(&block)?;
        let padded = size.div_ceil(512) * 512;
        let kind = block[156];
        anyhow::ensure!(kind != b'S', "a sparse file");
        if matches!(kind, b'L' | b'K' | b'x' | b'g') {
            let mut data = vec![0u8; padded as usize];
            input
                .read_exact(&mut data)
                .context("the tar ends inside a header")?;
            offset += padded;
            let value = &data[..size as usize];
            match kind {
                b'L' => long_name = Some(until_nul(value).to_vec()),
                b'K' => long_link = Some(until_nul(value).to_vec()),
                _ => {
                    for (key, v) in pax_records(value) {
                        match key {
                            b"path" => long_name = Some(v.to_vec()),
                            b"linkpath" => long_link = Some(v.to_vec()),
                            b"size" => anyhow::bail!("a pax size"),
                            k if k.starts_with(b"GNU.sparse") => anyhow::bail!("a sparse file"),
                            _ => {}
                        }
                    }
                }
            }
            pending.extend_from_slice(&block);
            pending.extend_from_slice(&data);
            continue;
        }
        let name = long_name.take().unwrap_or_else(|| header_name(&block));
        let link = long_link
            .take()
            .unwrap_or_else(|| until_nul(&block[157..257]).to_vec());
        let mut part = parts.len().saturating_sub(1);
        if kind == b'1' {
            part = part_of.get(&link).copied().unwrap_or(part);
        } else if parts.is_empty()
            || (entry_start >= share * parts.len() as u64 && parts.len() < outs.len())
        {
            parts.push((open(&outs[parts.len()])?, 0));
            part = parts.len() - 1;
        }
        if parts.is_empty() {
            parts.push((open(&outs[0])?, 0));
            part = 0;
        }
        if matches!(kind, b'0' | 0 | b'7') {
            part_of.insert(name, part);
        }
        let (encoder, bytes) = &mut parts[part];
        encoder.write_all(&pending)?;
        encoder.write_all(&block)?;
        let copied = io::copy(&mut (&mut input).take(padded), encoder)?;
        anyhow::ensure!(copied == padded, "the tar ends inside an entry");
        offset += padded;
        *bytes += pending.len() as u64 + 512 + padded;
        pending.clear();
    }
    let mut written = Vec::new();
    for (mut encoder, bytes) in parts {
        // the end of each part's archive: two zero blocks
        encoder.write_all(&[0u8; 1024])?;
        written.push(finish(encoder, bytes + 1024)?);
    }
    Ok(written)
}

/// The header's checksum field (octal) is the sum of its bytes, the field itself as spaces.
fn header_checksum_ok(block: &[u8; 512]) -> bool {
    let sum: u64 = (block.iter().enumerate())
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    let field = until_nul(&block[148..156]);
    std::str::from_utf8(field)
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 8).ok())
        == Some(sum)
}

/// The size field of a tar header: octal, or base-256 (GNU) when its high bit is set.
fn header_size(block: &[u8; 512]) -> anyhow::Result<u64> {
    let field = &block[124..136];
    if field[0] & 0x80 != 0 {
        let mut n = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = (n << 8) | u64::from(*b);
        }
        return Ok(n);
    }
    let text = std::str::from_utf8(until_nul(field))
        .context("a tar header's size is not text")?
        .trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).with_context(|| format!("a tar header's size `{text}`"))
}

/// The entry's name: ustar's prefix, a `/`, and the name.
fn header_name(block: &[u8; 512]) -> Vec<u8> {
    let name = until_nul(&block[0..100]);
    if &block[257..262] == b"ustar" && block[262] == 0 {
        let prefix = until_nul(&block[345..500]);
        if !prefix.is_empty() {
            return [prefix, b"/", name].concat();
        }
    }
    name.to_vec()
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or(bytes)
}

/// The records of a pax header: `<len> <key>=<value>\n`.
fn pax_records(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut records = Vec::new();
    while let Some(space) = data.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|len| *len > space + 1 && *len <= data.len())
        else {
            break;
        };
        let record = &data[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            records.push((&record[..eq], &record[eq + 1..]));
        }
        data = &data[len..];
    }
    records
}

/// Why an archive cannot be used, in a few words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    Missing(String),
    /// The zstd stream ends early or does not decode.
    Corrupt(String),
    /// It decodes, but is not the file the manifest describes.
    Checksum {
        expected: String,
        found: String,
    },
    /// Its tar holds what no cache mount may (see [`verify`]): the entry is refused whole.
    Unsafe(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Missing(e) => write!(f, "missing ({e})"),
            Damage::Unsafe(e) => write!(f, "unsafe to unpack: {e}"),
            Damage::Corrupt(e) => write!(f, "truncated or corrupt ({e})"),
            Damage::Checksum { expected, found } => write!(
                f,
                "checksum mismatch (sha256 {}..., the manifest says {}...)",
                &found[..12.min(found.len())],
                &expected[..12.min(expected.len())]
            ),
        }
    }
}

/// Decompresses `archive` into `out` and checks the compressed bytes' sha256 against `sha256`.
/// On any damage `out` is removed. Returns the size of the tar. (The import leaves the
/// decompression to BuildKit; the tests read back what [`compress`] wrote.)
#[cfg(test)]
pub fn decompress(archive: &Path, sha256: &str, out: &Path) -> Result<u64, Damage> {
    let result = decompress_inner(archive, sha256, out);
    if result.is_err() {
        let _ = fs::remove_file(out);
    }
    result
}

#[cfg(test)]
fn decompress_inner(archive: &Path, sha256: &str, out: &Path) -> Result<u64, Damage> {
    let file = fs::File::open(archive).map_err(|e| Damage::Missing(e.to_string()))?;
    let mut reader = HashingReader {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    };
    let written = {
        let mut decoder =
            zstd::Decoder::with_buffer(&mut reader).map_err(|e| Damage::Corrupt(e.to_string()))?;
        let output = fs::File::create(out).map_err(|e| Damage::Missing(e.to_string()))?;
        let mut output = BufWriter::new(output);
        let n = io::copy(&mut decoder, &mut output).map_err(|e| Damage::Corrupt(e.to_string()))?;
        output.flush().map_err(|e| Damage::Missing(e.to_string()))?;
        n
    };
    // whatever follows the zstd frame counts too
    io::copy(&mut reader, &mut io::sink()).map_err(|e| Damage::Corrupt(e.to_string()))?;
    let found = hex(&reader.hasher.finalize());
    if found != sha256 {
        return Err(Damage::Checksum {
            expected: sha256.to_string(),
            found,
        });
    }
    Ok(written)
}

/// The size of a tar with nothing in it (GNU tar's, what the export helper writes for a mount
/// with nothing to carry): its end-of-archive blocks, padded to a record.
pub const EMPTY_TAR_BYTES: u64 = 10240;

/// Checks that `archive` is the file the manifest describes, `bytes` long (else truncated or
/// grown) with sha256 `sha256`, and that the tar inside holds only what a cache mount may, in one
/// pass: no entry beyond the `tar_bytes` the manifest declares (a 10 GB file declared as 1 kB is
/// refused at its header, unread), no absolute path or `..`, no symlink or hard link that points
/// out of the mount, nothing but files, directories and links (no device, fifo or sparse file).
/// An entry is input from outside the machine (a CI cache, a shared registry): this runs before
/// BuildKit unpacks anything of it.
pub fn verify(archive: &Path, sha256: &str, bytes: u64, tar_bytes: u64) -> Result<(), Damage> {
    let file = fs::File::open(archive).map_err(|e| Damage::Missing(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| Damage::Missing(e.to_string()))?
        .len();
    if len != bytes {
        return Err(Damage::Corrupt(format!(
            "{len} bytes, the manifest says {bytes}"
        )));
    }
    let mut reader = HashingReader {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    };
    let contents = {
        let decoder =
            zstd::Decoder::with_buffer(&mut reader).map_err(|e| Damage::Corrupt(e.to_string()))?;
        inspect_tar(Limited {
            inner: decoder,
            left: tar_bytes,
        })
    };
    // whatever follows the zstd frame counts too
    let drained = io::copy(&mut reader, &mut io::sink());
    let found = hex(&reader.hasher.finalize());
    if found != sha256 {
        return Err(Damage::Checksum {
            expected: sha256.to_string(),
            found,
        });
    }
    drained.map_err(|e| Damage::Corrupt(e.to_string()))?;
    contents
}

/// A reader that fails once more than `left` bytes were read from it.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = (self.left.checked_sub(n as u64)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "more than the manifest declares",
            )
        })?;
        Ok(n)
    }
}

/// The checks of [`verify`] on the tar `reader` yields, which ends after the tar's declared
/// size. Pure but for reading.
fn inspect_tar<R: Read>(mut reader: Limited<R>) -> Result<(), Damage> {
    let declared = reader.left;
    let too_big = |what: &str| {
        Damage::Unsafe(format!(
            "{what} holds more than the {declared} bytes of tar its manifest declares"
        ))
    };
    {
        let mut tar = tar::Archive::new(&mut reader);
        let entries = tar.entries().map_err(|e| Damage::Corrupt(e.to_string()))?;
        let mut seen: u64 = 0;
        // the symlinks so far, normalized: no entry may go through one, no hard link name one
        let mut symlinks: Vec<String> = Vec::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => too_big("the tar"),
                _ => Damage::Corrupt(format!("not a tar ({e})")),
            })?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // a PAX sparse file: Go's tar (BuildKit's ADD) renames and grows it past these checks
            let sparse = (entry.pax_extensions().ok().flatten()).is_some_and(|mut pax| {
                pax.any(|x| x.is_ok_and(|x| x.key_bytes().starts_with(b"GNU.sparse")))
            });
            if sparse {
                return Err(Damage::Unsafe(format!(
                    "`{path}`: a sparse file (GNU.sparse)"
                )));
            }
            // the header and the data, padded to blocks, before any of it is read
            seen = seen.saturating_add(512 + entry.size().div_ceil(512) * 512);
            if seen > declared {
                return Err(too_big(&format!("`{path}` ({} bytes)", entry.size())));
            }
            let link = (entry.link_name_bytes()).map(|l| String::from_utf8_lossy(&l).into_owned());
            let kind = entry.header().entry_type();
            check_entry(&path, kind, link.as_deref())
                .and_then(|()| check_through_symlinks(&path, kind, link.as_deref(), &symlinks))
                .map_err(|e| Damage::Unsafe(format!("`{path}`: {e}")))?;
            if kind == tar::EntryType::Symlink {
                symlinks.push(normal(&path));
            }
        }
    }
    // the rest after the end-of-archive blocks is read too, within the declared size
    io::copy(&mut reader, &mut io::sink()).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => too_big("the tar"),
        _ => Damage::Corrupt(e.to_string()),
    })?;
    Ok(())
}

/// `path` without `.` and empty parts (`./a//b/` -> `a/b`).
fn normal(path: &str) -> String {
    let parts: Vec<&str> = (path.split('/'))
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    parts.join("/")
}

/// No entry is written through an earlier symlink of the tar (`a/l` -> `..`, then `a/l/x`), and
/// no hard link names one (a hard link to a symlink is that symlink, at another place).
fn check_through_symlinks(
    path: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    symlinks: &[String],
) -> Result<(), String> {
    let path = normal(path);
    let under = |p: &str, s: &String| {
        p.strip_prefix(s.as_str())
            .is_some_and(|r| r.starts_with('/'))
    };
    if let Some(s) = symlinks.iter().find(|s| under(&path, s)) {
        return Err(format!("written through the symlink `{s}`"));
    }
    if kind == tar::EntryType::Link {
        let target = normal(link.unwrap_or(""));
        if symlinks.iter().any(|s| *s == target || under(&target, s)) {
            return Err(format!("a hard link to the symlink `{target}`"));
        }
    }
    Ok(())
}

/// Whether one tar entry may be unpacked into a cache mount. Pure.
fn check_entry(path: &str, kind: tar::EntryType, link: Option<&str>) -> Result<(), String> {
    use tar::EntryType as T;
    if path.starts_with('/') {
        return Err("an absolute path".into());
    }
    if path.split('/').any(|c| c == "..") {
        return Err("a `..` in its path".into());
    }
    match kind {
        T::Regular | T::Continuous | T::Directory => Ok(()),
        T::Symlink => {
            let target = link.unwrap_or("");
            // where the link points, from the directory it is in: never above the mount's root
            let mut depth = normal(path).split('/').count() as i64 - 1;
            let escapes = target.starts_with('/')
                || target.split('/').any(|c| {
                    depth += match c {
                        ".." => -1,
                        "" | "." => 0,
                        _ => 1,
                    };
                    depth < 0
                });
            match escapes {
                true => Err(format!("a symlink out of the mount (to `{target}`)")),
                false => Ok(()),
            }
        }
        T::Link => {
            let target = link.unwrap_or("");
            match target.starts_with('/') || target.split('/').any(|c| c == "..") {
                true => Err(format!("a hard link out of the mount (to `{target}`)")),
                false => Ok(()),
            }
        }
        other => Err(format!(
            "a {other:?} entry (a cache holds files, directories and links only)"
        )),
    }
}

/// Hard-links `from` to `to` (replacing `to`), or copies it where the file system does not allow.
pub fn link_file(from: &Path, to: &Path) -> io::Result<()> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)?;
    }
    Ok(())
}

/// sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut reader = HashingReader {
        inner: BufReader::new(fs::File::open(path)?),
        hasher: Sha256::new(),
    };
    io::copy(&mut reader, &mut io::sink())?;
    Ok(hex(&reader.hasher.finalize()))
}

/// Checks that every blob of an OCI layout (`blobs/sha256/<hex>`) has the digest it is named by
/// and that `index.json` parses; returns the bytes checked.
pub fn check_layout(dir: &Path) -> Result<u64, String> {
    let index = dir.join("index.json");
    let text = fs::read_to_string(&index).map_err(|e| format!("no index.json ({e})"))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("index.json does not parse ({e})"))?;
    let blobs = dir.join("blobs/sha256");
    let mut bytes = 0;
    for entry in fs::read_dir(&blobs).map_err(|e| format!("no blobs/sha256 ({e})"))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let found = sha256_file(&entry.path()).map_err(|e| format!("blob {name}: {e}"))?;
        if found != name {
            return Err(format!(
                "blob {}... is damaged (sha256 {}...)",
                &name[..12.min(name.len())],
                &found[..12]
            ));
        }
        bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
    }
    Ok(bytes)
}

/// Merges OCI layouts (one per image: concurrent `--cache-to type=local` writes to one directory
/// collide in its ingest area) into one at `into`: blobs once each, every index entry kept.
/// Returns the bytes of the merged blobs.
pub fn merge_layouts(layouts: &[PathBuf], into: &Path) -> Result<u64, String> {
    let blobs = into.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| format!("cannot create {}: {e}", blobs.display()))?;
    let mut manifests: Vec<serde_json::Value> = Vec::new();
    let mut bytes = 0;
    for layout in layouts {
        let index = layout.join("index.json");
        let text = fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
        manifests.extend(value["manifests"].as_array().cloned().unwrap_or_default());
        let from = layout.join("blobs/sha256");
        for entry in fs::read_dir(&from).map_err(|e| format!("{}: {e}", from.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let dst = blobs.join(entry.file_name());
            if dst.exists() {
                continue;
            }
            if fs::hard_link(entry.path(), &dst).is_err() {
                fs::copy(entry.path(), &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
            }
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(into.join("index.json"), index.to_string()).map_err(|e| e.to_string())?;
    fs::write(
        into.join("oci-layout"),
        "{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Copies a directory tree, hard-linking files where the file system allows (an OCI layout's
/// blobs are never modified in place); returns the bytes.
pub fn link_tree(from: &Path, to: &Path) -> io::Result<u64> {
    fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            bytes += link_tree(&src, &dst)?;
        } else if kind.is_file() {
            if fs::hard_link(&src, &dst).is_err() {
                fs::copy(&src, &dst)?;
            }
            bytes += entry.metadata()?.len();
        }
    }
    Ok(bytes)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.hasher.update(&buf[..amt]);
        }
        self.inner.consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn tar_like(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("m.tar");
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        fs::write(&path, data).unwrap();
        path
    }

    /// The system's tar with `args`, which must succeed; its stdout.
    fn run_tar<'a>(args: impl IntoIterator<Item = &'a OsStr>) -> String {
        let args: Vec<&OsStr> = args.into_iter().collect();
        let out = std::process::Command::new("tar")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A real tar (GNU tar's), with a long name, a hard link and a directory, split into three
    /// parts: each part is a whole tar, the link travels with its file, and the parts unpacked
    /// into one directory give back every file with its bytes and mtime.
    #[test]
    fn split_parts_are_whole_tars() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let long = "d".repeat(120);
        fs::create_dir_all(src.join("release/deps").join(&long)).unwrap();
        let big = |seed: u32| -> Vec<u8> {
            (0..60_000u32)
                .flat_map(|i| (i.wrapping_mul(seed) % 251).to_le_bytes())
                .collect()
        };
        fs::write(src.join("release/deps/libz-0123456789abcdef.rlib"), big(3)).unwrap();
        fs::write(src.join("release/deps/attune_api-0123456789abcdef"), big(5)).unwrap();
        fs::write(src.join("release/deps").join(&long).join("f"), big(7)).unwrap();
        fs::write(
            src.join("release/deps/libq-0123456789abcdef.rmeta"),
            big(11),
        )
        .unwrap();
        fs::write(src.join("release/.cargo-lock"), b"").unwrap();
        fs::hard_link(
            src.join("release/deps/attune_api-0123456789abcdef"),
            src.join("release/attune-api"),
        )
        .unwrap();
        let tar = tmp.path().join("t.tar");
        run_tar([
            OsStr::new("-cf"),
            tar.as_os_str(),
            "-C".as_ref(),
            src.as_os_str(),
            ".".as_ref(),
        ]);
        let outs: Vec<PathBuf> = (0..3)
            .map(|k| tmp.path().join(format!("p{k}.zst")))
            .collect();
        let written = compress_split(&tar, &outs, LEVEL).unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
        let dest = tmp.path().join("dest");
        fs::create_dir_all(&dest).unwrap();
        let mut names = Vec::new();
        for (k, w) in written.iter().enumerate() {
            assert_eq!(w.sha256, sha256_file(&outs[k]).unwrap());
            let part = tmp.path().join(format!("p{k}.tar"));
            assert_eq!(decompress(&outs[k], &w.sha256, &part), Ok(w.tar_bytes));
            let listed = run_tar(["-tvf".as_ref(), part.as_os_str()]);
            if listed.contains("attune-api link to") {
                assert!(
                    listed.contains("./release/deps/attune_api-0123456789abcdef\n"),
                    "{listed}"
                );
            }
            names.extend(
                listed
                    .lines()
                    .map(|l| l.rsplit(' ').next().unwrap().to_string()),
            );
            run_tar([
                "-xf".as_ref(),
                part.as_os_str(),
                "-C".as_ref(),
                dest.as_os_str(),
            ]);
        }
        let whole = run_tar(["-tf".as_ref(), tar.as_os_str()]);
        assert_eq!(names.len(), whole.lines().count(), "{names:?}");
        for file in [
            "release/deps/libz-0123456789abcdef.rlib",
            "release/deps/attune_api-0123456789abcdef",
            "release/attune-api",
            &format!("release/deps/{long}/f"),
        ] {
            assert_eq!(
                fs::read(dest.join(file)).unwrap(),
                fs::read(src.join(file)).unwrap(),
                "{file}"
            );
            // a GNU tar keeps whole seconds
            let secs = |p: PathBuf| {
                (fs::metadata(p).unwrap().modified().unwrap())
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
            };
            assert_eq!(secs(dest.join(file)), secs(src.join(file)), "{file}");
        }

        // more parts than entries: only those that got one are written
        let many: Vec<PathBuf> = (0..8)
            .map(|k| tmp.path().join(format!("m{k}.zst")))
            .collect();
        let written = compress_split(&tar, &many, LEVEL).unwrap();
        assert!(written.len() < 8, "{}", written.len());
        assert!(!many[written.len()].exists());
        // a tar it cannot read whole travels as one part, as it is
        let cut = tmp.path().join("cut.tar");
        fs::write(&cut, &fs::read(&tar).unwrap()[..3000]).unwrap();
        let written = compress_split(&cut, &outs, LEVEL).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].tar_bytes, 3000);
        assert!(!outs[1].exists());
        let mut bad = fs::read(&tar).unwrap();
        bad[0] ^= 1; // the first header's checksum no longer holds
        fs::write(&cut, &bad).unwrap();
        assert_eq!(compress_split(&cut, &outs, LEVEL).unwrap().len(), 1);

        // a hard link whose entry falls in a later part than its file goes with the file, in
        // both tar formats (GNU's long names, pax's)
        for format in ["gnu", "pax"] {
            let list = tmp.path().join("order");
            fs::write(
                &list,
                [
                    "./release/deps/attune_api-0123456789abcdef",
                    "./release/deps/libz-0123456789abcdef.rlib",
                    "./release/deps/libq-0123456789abcdef.rmeta",
                    &format!("./release/deps/{long}/f"),
                    "./release/attune-api",
                ]
                .join("\n"),
            )
            .unwrap();
            let ordered = tmp.path().join(format!("{format}.tar"));
            let format_arg = format!("--format={format}");
            run_tar([
                format_arg.as_ref(),
                "-cf".as_ref(),
                ordered.as_os_str(),
                "-C".as_ref(),
                src.as_os_str(),
                "-T".as_ref(),
                list.as_os_str(),
            ]);
            let two: Vec<PathBuf> = (0..2)
                .map(|k| tmp.path().join(format!("{format}{k}.zst")))
                .collect();
            let written = compress_split(&ordered, &two, LEVEL).unwrap();
            assert_eq!(written.len(), 2, "{format}");
            let first = tmp.path().join(format!("{format}0.tar"));
            decompress(&two[0], &written[0].sha256, &first).unwrap();
            let listed = run_tar(["-tf".as_ref(), first.as_os_str()]);
            assert!(
                listed.contains("./release/attune-api"),
                "{format}: {listed}"
            );
            assert!(
                listed.contains("./release/deps/attune_api-0123456789abcdef"),
                "{format}: {listed}"
            );
            let second = tmp.path().join(format!("{format}1.tar"));
            decompress(&two[1], &written[1].sha256, &second).unwrap();
            let listed = run_tar(["-tf".as_ref(), second.as_os_str()]);
            assert!(listed.contains(&long), "{format}: {listed}");
            assert!(!listed.contains("attune-api"), "{format}: {listed}");
        }
        assert_eq!(parts_for(171 << 20), 2);
        assert_eq!(parts_for(19 << 20), 1);
        assert_eq!(parts_for(0), 1);
        assert_eq!(parts_for(u64::MAX / 2), MAX_PARTS);
    }

    #[test]
    fn round_trip_with_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = tar_like(tmp.path());
        let zst = tmp.path().join("m.tar.zst");
        let written = compress(&tar, &zst, LEVEL).unwrap();
        assert_eq!(written.tar_bytes, 800_000);
        assert!(written.bytes < written.tar_bytes / 10, "{written:?}");
        assert_eq!(written.bytes, fs::metadata(&zst).unwrap().len());
        assert_eq!(written.sha256, sha256_file(&zst).unwrap());
        let out = tmp.path().join("out.tar");
        assert_eq!(decompress(&zst, &written.sha256, &out), Ok(800_000));
        assert_eq!(fs::read(&out).unwrap(), fs::read(&tar).unwrap());
    }

    #[test]
    fn damage_is_detected_before_anything_is_staged() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("release/deps")).unwrap();
        fs::write(
            tree.join("release/deps/a"),
            tar_like(tmp.path()).display().to_string(),
        )
        .unwrap();
        std::os::unix::fs::symlink("../deps/a", tree.join("release/deps/b")).unwrap();
        let tar = tmp.path().join("real.tar");
        run_tar([
            OsStr::new("-cf"),
            tar.as_os_str(),
            OsStr::new("-C"),
            tree.as_os_str(),
            OsStr::new("."),
        ]);
        let zst = tmp.path().join("m.tar.zst");
        let written = compress(&tar, &zst, LEVEL).unwrap();
        let bytes = fs::read(&zst).unwrap();
        let verify =
            |zst: &Path, sha256: &str, bytes: u64| verify(zst, sha256, bytes, written.tar_bytes);
        assert_eq!(verify(&zst, &written.sha256, written.bytes), Ok(()));

        fs::write(&zst, &bytes[..bytes.len() / 2]).unwrap();
        let err = verify(&zst, &written.sha256, written.bytes).unwrap_err();
        assert!(matches!(err, Damage::Corrupt(_)), "{err}");
        assert!(
            err.to_string().starts_with("truncated or corrupt ("),
            "{err}"
        );

        // a flipped byte: same length, another checksum
        let mut flipped = bytes.clone();
        let i = flipped.len() / 2;
        flipped[i] ^= 0x55;
        fs::write(&zst, &flipped).unwrap();
        let err = verify(&zst, &written.sha256, written.bytes).unwrap_err();
        assert!(
            err.to_string().starts_with("checksum mismatch (sha256 "),
            "{err}"
        );

        // intact, but not the archive the manifest describes
        fs::write(&zst, &bytes).unwrap();
        let err = verify(&zst, &"00".repeat(32), written.bytes).unwrap_err();
        assert!(matches!(err, Damage::Checksum { .. }), "{err}");

        let err = verify(&tmp.path().join("nope"), &written.sha256, written.bytes).unwrap_err();
        assert!(matches!(err, Damage::Missing(_)), "{err}");
    }

    #[test]
    fn only_files_directories_and_links_inside_the_mount_are_taken() {
        use tar::EntryType as T;
        for (path, kind, link) in [
            ("./release/deps/a", T::Regular, None),
            ("./release", T::Directory, None),
            ("./release/deps/b", T::Symlink, Some("../deps/a")),
            ("./release/deps/c", T::Symlink, Some("../../release")),
            ("./release/attune-api", T::Link, Some("./release/deps/a")),
        ] {
            assert_eq!(check_entry(path, kind, link), Ok(()), "{path}");
        }
        for (path, kind, link, why) in [
            ("/etc/x", T::Regular, None, "an absolute path"),
            ("./a/../../x", T::Regular, None, "a `..`"),
            ("./release/x", T::Symlink, Some("/etc"), "a symlink out"),
            ("./release/x", T::Symlink, Some("../../x"), "a symlink out"),
            ("./x", T::Symlink, Some("a/../../x"), "a symlink out"),
            ("./x", T::Link, Some("../x"), "a hard link out"),
            ("./x", T::Link, Some("/etc/passwd"), "a hard link out"),
            ("./x", T::Char, None, "a Char entry"),
            ("./x", T::Block, None, "a Block entry"),
            ("./x", T::Fifo, None, "a Fifo entry"),
            ("./x", T::GNUSparse, None, "a GNUSparse entry"),
            // `.` and empty parts of its own path do not count as depth
            (
                "a/./././b",
                T::Symlink,
                Some("../../../../etc"),
                "a symlink out",
            ),
            ("a//b/", T::Symlink, Some("../../x"), "a symlink out"),
        ] {
            let err = check_entry(path, kind, link).unwrap_err();
            assert!(err.starts_with(why), "{path} {link:?}: {err}");
        }
        // through an earlier symlink, or a hard link to one
        let symlinks = vec!["a/l".to_string(), "a/b/s".to_string()];
        let through = |path, kind, link| check_through_symlinks(path, kind, link, &symlinks);
        assert!(through("./a/l/m", T::Symlink, Some("../x"))
            .unwrap_err()
            .contains("`a/l`"));
        assert!(through("t", T::Link, Some("./a/b/s"))
            .unwrap_err()
            .contains("hard link"));
        assert!(through("a/lx", T::Regular, None).is_ok());
        assert!(through("t", T::Link, Some("a/b/file")).is_ok());
    }

    #[test]
    fn layout_blobs_are_checked_by_their_names() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(tmp.path().join("index.json"), "{\"manifests\": []}").unwrap();
        let good = blobs.join("x");
        fs::write(&good, "hello").unwrap();
        let digest = sha256_file(&good).unwrap();
        fs::rename(&good, blobs.join(&digest)).unwrap();
        assert_eq!(check_layout(tmp.path()), Ok(5));
        fs::write(blobs.join(&digest), "hellO").unwrap();
        assert!(check_layout(tmp.path()).unwrap_err().contains("is damaged"));

        let copy = tmp.path().join("copy");
        assert_eq!(
            link_tree(tmp.path().join("blobs").as_path(), &copy).unwrap(),
            5
        );
        assert_eq!(
            fs::read(copy.join("sha256").join(&digest)).unwrap(),
            b"hellO"
        );
    }
}
