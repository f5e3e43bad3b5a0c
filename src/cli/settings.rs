//! The runtime settings as flags: one `--<field>` per entry of
//! [`RUNTIME_SETTINGS`], so the flags, the `TRANCHE_<FIELD>` variables and
//! the job file's `[runtime]` keys come from one list.

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use tranche::config::{Flags, RUNTIME_SETTINGS};

/// The runtime settings given on the command line.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuntimeFlags(pub(crate) Flags);

impl FromArgMatches for RuntimeFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags::default();
        for s in RUNTIME_SETTINGS {
            if let Some(v) = matches.get_one::<String>(s.field) {
                flags.set(s.field, v.clone());
            }
        }
        Ok(Self(flags))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for RuntimeFlags {
    fn augment_args(cmd: Command) -> Command {
        RUNTIME_SETTINGS.iter().fold(cmd, |cmd, s| {
            cmd.arg(
                Arg::new(s.field)
                    .long(s.field.replace('_', "-"))
                    .value_name("VALUE")
                    .help(format!("{} [env: {}]", s.help, s.env()))
                    .help_heading("Runtime settings"),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
