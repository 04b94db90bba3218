//! How the binaries print errors: miette's graphical report, wrapped only between words.

/// Installs the error style both binaries use. miette wraps long messages and, by
/// default, also splits words at their hyphens, which breaks flags across lines
/// (`--upstream-` / `insecure`): a flag a user copies from the help must stay whole.
pub fn install_error_style() {
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .word_splitter(textwrap::WordSplitter::NoHyphenation)
                .build(),
        )
    }));
}
