//! Modules describe their functions (Baton only: etcd has no modules), on a 3-member cluster:
//! every built-in lists the functions it declares through any member and the CLI; a user's
//! module carrying a `baton:functions` section describes it and still runs; one built before the
//! declaration (the 0.1 fixture) describes by its exports; and a deploy whose declaration is
//! malformed, duplicated or oversized is refused with INVALID_ARGUMENT, storing nothing.

use anyhow::{Context, Result, ensure};
use baton_apply::sm::builtin::with_custom_section;
use baton_e2e::{Backend, Cluster, baton_bin, run_test};
use baton_limits::MODULE_FUNCTIONS_SECTION_BYTES_MAX;
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{DeployRequest, DescribeRequest, ModuleVersion};
use baton_wasm::builtin::BUILTIN_MODULES;
use baton_wasm::{FUNCTIONS_SECTION, declared_functions, hash_hex, module_hash};
use tonic::transport::Channel;

use crate::modules::{invoke, modules_client, wait_deployed};

/// The counter as an earlier Baton built it, before modules declared their functions.
const COUNTER_V01: &[u8] = include_bytes!("../../../host/wasm/fixtures/counter-v0.1.wasm");

/// A declaration a user might append to a component built by hand.
const DECLARATION: &str = r#"{"functions":[
    {"name":"add","writes":true,"waits":false,"summary":"Adds by to each key.",
     "input":"keys, by","input_example":"{\"keys\":[\"k\"],\"by\":1}",
     "output_example":"{\"k\":1}"},
    {"name":"get","writes":false,"waits":true,"summary":"Reads counters."}]}"#;

async fn latest(client: &mut ModulesClient<Channel>, name: &str) -> Result<ModuleVersion> {
    let info = client
        .describe(DescribeRequest { name: name.into() })
        .await
        .with_context(|| format!("describe {name}"))?
        .into_inner();
    info.versions.into_iter().last().context("no versions")
}

/// Runs the CLI against the whole cluster; its stdout, or why it failed.
async fn cli(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(baton_bin()?)
        .args(["--endpoints", &cluster.endpoints().join(",")])
        .args(args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "baton {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_describes_the_functions_it_declares() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        for (i, (name, component)) in BUILTIN_MODULES.iter().enumerate() {
            // Through every member in turn: each reads the bytes it stored itself.
            let mut client = modules_client(cluster.endpoint(i % cluster.size())).await?;
            wait_deployed(&mut client, name).await?;
            let v = latest(&mut client, name).await?;
            ensure!(v.hash == hash_hex(&module_hash(component)), "{name}: {v:?}");
            let declared = declared_functions(component)
                .map_err(anyhow::Error::msg)?
                .with_context(|| format!("{name} declares nothing"))?;
            ensure!(v.declares_functions, "{name}: {v:?}");
            let described: Vec<_> = (v.functions.iter())
                .map(|f| (&f.name, f.writes, f.waits, &f.summary, &f.input_example))
                .collect();
            let expected: Vec<_> = (declared.iter())
                .map(|f| (&f.name, f.writes, f.waits, &f.summary, &f.input_example))
                .collect();
            ensure!(described == expected, "{name}: {described:?}");
        }

        let mut client = modules_client(cluster.endpoint(0)).await?;
        let counter = latest(&mut client, "counter").await?;
        let get = (counter.functions.iter())
            .find(|f| f.name == "get")
            .context("counter get")?;
        ensure!(!get.writes && get.waits, "{get:?}");

        // The CLI, as a user would ask.
        let described = cli(&cluster, &["module", "describe", "lock"]).await?;
        for function in [
            "acquire",
            "try-acquire",
            "release",
            "fenced-put",
            "fenced-txn",
        ] {
            ensure!(
                described.contains(&format!("\n  {function}  (")),
                "describe lock printed {described:?}"
            );
        }
        let help = cli(&cluster, &["call", "queue", "--help"]).await?;
        ensure!(
            help.contains(r#"example: baton call queue push '{"queue":"jobs","value":"a"}'"#)
                && help.contains("  peek  (reads only; --read-only works)"),
            "call queue --help printed {help:?}"
        );
        let listed = cli(&cluster, &["call", "counter"]).await?;
        ensure!(
            listed.contains("  add  (writes)") && listed.contains("  get  (reads only, may wait"),
            "call counter printed {listed:?}"
        );
        let one = cli(&cluster, &["call", "counter", "get", "--help"]).await?;
        ensure!(
            one.contains("  get  (") && !one.contains("  add  ("),
            "call counter get --help printed {one:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_modules_describe_with_or_without_a_declaration_and_bad_ones_are_refused() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        // A follower validates before forwarding; the leader and every member again at apply.
        let mut client = modules_client(cluster.endpoint(1)).await?;
        let deploy = |name: &str, component: Vec<u8>| DeployRequest {
            name: name.into(),
            component,
        };

        // Built before the declaration: described by its exports.
        client.deploy(deploy("old", COUNTER_V01.to_vec())).await?;
        let old = latest(&mut client, "old").await?;
        ensure!(
            !old.declares_functions && old.functions.is_empty() && !old.exports.is_empty(),
            "{old:?}"
        );
        let shown = cli(&cluster, &["call", "old"]).await?;
        ensure!(
            shown.contains("declares no functions") && shown.contains(&old.exports[0]),
            "call old printed {shown:?}"
        );

        // The same module with a declaration appended to the component: described, still runs.
        let declared = with_custom_section(COUNTER_V01, FUNCTIONS_SECTION, DECLARATION.as_bytes());
        client.deploy(deploy("declared", declared)).await?;
        let v = latest(&mut client, "declared").await?;
        let names: Vec<&str> = v.functions.iter().map(|f| f.name.as_str()).collect();
        ensure!(v.declares_functions && names == ["add", "get"], "{v:?}");
        let add = &v.functions[0];
        ensure!(
            add.writes && !add.waits && add.output_example == r#"{"k":1}"#,
            "{add:?}"
        );
        let added = client
            .invoke(invoke("declared", "add", r#"{"keys":["d"],"by":2}"#, 0))
            .await?
            .into_inner();
        ensure!(added.output == br#"{"d":2}"#, "{:?}", added.output);
        let help = cli(&cluster, &["call", "declared", "--help"]).await?;
        ensure!(
            help.contains(r#"example: baton call declared add '{"keys":["k"],"by":1}'"#),
            "call declared --help printed {help:?}"
        );

        // Refused at validation, before anything reaches the log.
        let oversized = format!(
            r#"{{"functions":[]}}{}"#,
            " ".repeat(MODULE_FUNCTIONS_SECTION_BYTES_MAX)
        );
        let twice = with_custom_section(
            &with_custom_section(COUNTER_V01, FUNCTIONS_SECTION, br#"{"functions":[]}"#),
            FUNCTIONS_SECTION,
            br#"{"functions":[]}"#,
        );
        for (name, component, why) in [
            (
                "malformed",
                with_custom_section(COUNTER_V01, FUNCTIONS_SECTION, b"{not json"),
                "not the expected JSON",
            ),
            (
                "oversized",
                with_custom_section(COUNTER_V01, FUNCTIONS_SECTION, oversized.as_bytes()),
                "exceeds the limit",
            ),
            ("twice", twice, "more than one"),
        ] {
            let refused = client
                .deploy(deploy(name, component))
                .await
                .expect_err(name);
            ensure!(
                refused.code() == tonic::Code::InvalidArgument && refused.message().contains(why),
                "{name}: {refused:?}"
            );
            let absent = client
                .describe(DescribeRequest { name: name.into() })
                .await
                .expect_err(name);
            ensure!(absent.code() == tonic::Code::NotFound, "{name}: {absent:?}");
        }
        Ok(())
    })
    .await;
}
