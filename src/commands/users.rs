//! `weir users`: add, remove and list users and issue bearer tokens, in the data directory's user store
//! (`<data_dir>/security/users.jsonl`), which a running `weir up` re-reads within a second.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context, Result};
use weir_security::users::UserInfo;
use weir_security::Security;

use super::one_line;
use crate::cli::UsersCommand;
use crate::settings::Settings;

pub fn run(settings: Settings, cmd: UsersCommand) -> Result<()> {
    let dir = settings.security_dir();
    let security = Security::open(&dir, settings.security.clone()).map_err(one_line)?;
    match cmd {
        UsersCommand::Add { name, password_stdin: _, password, iterations } => {
            // Checked before reading stdin, so a bad name does not wait for a password first.
            weir_security::users::check_name(&name).map_err(one_line)?;
            let password = match password {
                Some(p) => p,
                None => read_password(&name)?,
            };
            let existed = security.users.list().iter().any(|u| u.name == name && !u.from_settings);
            security.users.set_password(&name, &password, iterations).map_err(one_line)?;
            let done = if existed { "password changed" } else { "added" };
            println!("user {name} {done} (SCRAM-SHA-256, SCRAM-SHA-512, {iterations} iterations)");
            if settings.security.config_users.contains_key(&name) {
                eprintln!(
                    "note: {name} is also in the settings file's [kafka.users]; this password is the one checked"
                );
            }
        }
        UsersCommand::Remove { name } => {
            if !security.users.remove(&name).map_err(one_line)? {
                if settings.security.config_users.contains_key(&name) {
                    bail!("{name} is in the settings file's [kafka.users]: remove it there");
                }
                bail!("no user {name:?}");
            }
            println!("user {name} removed, with its passwords and tokens");
        }
        UsersCommand::List => {
            let users = security.users.list();
            let width = users.iter().map(|u| u.name.chars().count()).max().unwrap_or(0);
            for user in &users {
                println!("{}", list_line(user, width));
            }
        }
        UsersCommand::Token { name } => {
            let token = security.users.issue_token(&name).map_err(one_line)?;
            // Alone on stdout so that `TOKEN=$(weir users token NAME)` captures exactly the token.
            println!("{token}");
            eprintln!(
                "a bearer token for {name} (id {}): it is shown only this once; weir keeps only its SHA-256",
                token_id(&token)
            );
        }
    }
    Ok(())
}

/// One line of `weir users list`: the name, each SCRAM mechanism with its iterations (as kafka-configs.sh shows
/// them), the tokens' ids, and where the user comes from.
fn list_line(user: &UserInfo, width: usize) -> String {
    let mechanisms = if user.mechanisms.is_empty() {
        "no password".to_string()
    } else {
        let each: Vec<String> = user.mechanisms.iter().map(|(m, n)| format!("{}=iterations={n}", m.name())).collect();
        each.join(", ")
    };
    let mut line = format!("{:<width$}  {mechanisms}", user.name);
    if !user.tokens.is_empty() {
        line.push_str(&format!("  tokens: {}", user.tokens.join(", ")));
    }
    if user.from_settings {
        line.push_str("  (settings file)");
    }
    line
}

/// The id `weir users list` shows for a token: its first characters, as the store keeps them.
fn token_id(token: &str) -> &str {
    token.get(..13).unwrap_or(token)
}

/// One line from stdin, without its line ending. No prompt and no terminal tricks, so a script can pipe the password
/// in; a person at a terminal is told what is awaited rather than left looking at a silent command.
fn read_password(name: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "reading {name}'s password from stdin (one line; it is echoed: prefer `... | weir users add {name}`)"
        );
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
    if password.is_empty() {
        bail!("no password on stdin (give it as one line, or use --password)");
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_security::Mechanism;

    #[test]
    fn list_lines_show_mechanisms_tokens_and_origin() {
        let user = UserInfo {
            name: "al".into(),
            mechanisms: vec![(Mechanism::Sha256, 4096), (Mechanism::Sha512, 8192)],
            tokens: vec!["weir_0123abcd".into()],
            from_settings: false,
        };
        assert_eq!(
            list_line(&user, 4),
            "al    SCRAM-SHA-256=iterations=4096, SCRAM-SHA-512=iterations=8192  tokens: weir_0123abcd"
        );
        let user = UserInfo { name: "svc".into(), mechanisms: vec![], tokens: vec![], from_settings: true };
        assert_eq!(list_line(&user, 3), "svc  no password  (settings file)");
    }
}
