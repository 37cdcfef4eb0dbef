//! A guest's kernel command line with the options its platform requires.
//!
//! A platform that cannot give the guest something (a second CPU, an HPET,
//! PCI configuration space) tells Linux so on the command line. The user's
//! own choice wins: an option is added only when the command line names
//! none of the parameters that would override it.

/// One option the platform adds: `option` unless any of `overridden_by`
/// (a parameter name, `name` or `name=`) is already on the line.
#[derive(Clone, Copy, Debug)]
pub struct RequiredOption {
    pub option: &'static str,
    pub overridden_by: &'static [&'static str],
    /// Why the platform needs it (logged when it is added).
    pub why: &'static str,
}

/// The command line does not fit the kernel's limit with the options added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong {
    pub needed: usize,
    pub room: usize,
}

/// Whether `line` names parameter `name` (`name` alone or `name=...`;
/// `name` given as `foo=` matches only `foo=...`). Parameters are
/// space-separated words; everything after ` -- ` goes to init.
fn names(line: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    let kernel_part = line.windows(4).position(|w| w == b" -- ").map_or(line, |i| &line[..i]);
    kernel_part.split(|&b| b == b' ').any(|word| {
        if let Some(key) = name.strip_suffix(b"=") {
            word.len() > key.len() && word.starts_with(key) && word[key.len()] == b'='
        } else {
            word == name || (word.len() > name.len() && word.starts_with(name) && word[name.len()] == b'=')
        }
    })
}

/// Writes `user` plus each missing option of `required` into `out`, the
/// options before any ` -- ` (after it the words are init's); returns the
/// length and which options were added (a bit per entry).
pub fn with_required(user: &[u8], required: &[RequiredOption], out: &mut [u8]) -> Result<(usize, u32), TooLong> {
    let user = user.strip_suffix(b"\0").unwrap_or(user);
    let mut len = 0;
    let mut added = 0u32;
    let mut push = |bytes: &[u8], len: &mut usize| -> Result<(), TooLong> {
        let end = *len + bytes.len();
        if end > out.len() {
            return Err(TooLong { needed: end, room: out.len() });
        }
        out[*len..end].copy_from_slice(bytes);
        *len = end;
        Ok(())
    };
    let init_args = user.windows(4).position(|w| w == b" -- ").unwrap_or(user.len());
    let (kernel_part, init_part) = user.split_at(init_args);
    push(kernel_part, &mut len)?;
    for (i, r) in required.iter().enumerate() {
        if r.overridden_by.iter().any(|name| names(user, name)) {
            continue;
        }
        if len > 0 {
            push(b" ", &mut len)?;
        }
        push(r.option.as_bytes(), &mut len)?;
        added |= 1 << i;
    }
    push(init_part, &mut len)?;
    Ok((len, added))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIRED: [RequiredOption; 2] = [
        RequiredOption { option: "nosmp", overridden_by: &["nosmp", "maxcpus=", "nr_cpus="], why: "one CPU" },
        RequiredOption { option: "pci=off", overridden_by: &["pci="], why: "no PCI" },
    ];

    fn run(user: &str) -> (String, u32) {
        let mut out = [0u8; 64];
        let (len, added) = with_required(user.as_bytes(), &REQUIRED, &mut out).unwrap();
        (String::from_utf8(out[..len].to_vec()).unwrap(), added)
    }

    #[test]
    fn missing_options_are_appended() {
        assert_eq!(run("console=ttyS0"), ("console=ttyS0 nosmp pci=off".into(), 0b11));
        assert_eq!(run(""), ("nosmp pci=off".into(), 0b11));
    }

    #[test]
    fn the_users_choice_wins() {
        assert_eq!(run("maxcpus=1 pci=conf1"), ("maxcpus=1 pci=conf1".into(), 0));
        assert_eq!(run("nosmp quiet"), ("nosmp quiet pci=off".into(), 0b10));
    }

    #[test]
    fn look_alikes_and_init_arguments_do_not_count() {
        // `nosmpx` is another word; `maxcpus` without `=` is not `maxcpus=`;
        // after ` -- ` the words are init's.
        assert_eq!(run("nosmpx maxcpus pcix=1").1, 0b11);
        assert_eq!(run("quiet -- nosmp pci=off"), ("quiet nosmp pci=off -- nosmp pci=off".into(), 0b11));
    }

    #[test]
    fn too_long_is_an_error_not_a_truncation() {
        let mut out = [0u8; 16];
        assert_eq!(with_required(b"console=ttyS0", &REQUIRED, &mut out), Err(TooLong { needed: 19, room: 16 }));
    }
}
