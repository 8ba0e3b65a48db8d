//! Local stand-ins for the two Google APIs bqsteward calls that have no public emulator: Cloud
//! Identity Groups ([`cloud_identity`]) and Resource Manager IAM ([`resource_manager`]). Stateful,
//! in memory, over real HTTP on loopback, following the published REST contract for the calls
//! bqsteward makes (each module's header lists what is covered and simplified). They are started
//! by `scripts/emulators.sh` (through the hidden `bqsteward stand-ins` command) for the demo and
//! for trying ConsumerProject and GroupMembership locally, and in-process by the tests, which also
//! use their fault injection. Never used against Google.

pub mod cloud_identity;
pub mod http1;
pub mod resource_manager;

/// Serves both stand-ins on the given loopback ports until the process ends; prints the
/// environment variables that point bqsteward at them.
pub async fn serve(cloud_identity_port: u16, resource_manager_port: u16) -> std::io::Result<()> {
    let groups = cloud_identity::FakeGroups::start_on(cloud_identity_port, 200).await?;
    let iam = resource_manager::FakeIam::start_on(resource_manager_port).await?;
    println!("export CLOUD_IDENTITY_EMULATOR_HOST={}", groups.url);
    println!("export RESOURCE_MANAGER_EMULATOR_HOST={}", iam.url);
    std::future::pending::<()>().await;
    Ok(())
}
