//! A shell image for the swarm's storage probe (`[swarm] probe_image`): `FROM scratch` with
//! Debian's statically linked busybox as `/bin/busybox` and `/bin/sh`, made once and kept in
//! the host's engine under `SHELL_IMAGE`.

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::TryStreamExt;

use super::tools::ensure;

/// The shell image, tagged with the version of its recipe: change the tag with the recipe.
pub const SHELL_IMAGE: &str = "local/jobq-shell:1";
/// Where Debian's `busybox-static` puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// One build of the image at a time in a test process.
static SHELL_IMAGE_BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure the host's engine has `SHELL_IMAGE`, importing it from a tarball of busybox
/// (installing `busybox-static` on the host first when it is not).
pub async fn shell_image(host: &Docker) {
    let _one = SHELL_IMAGE_BUILD.lock().await;
    if host.inspect_image(SHELL_IMAGE).await.is_ok() {
        return;
    }
    // Debian's `busybox` package has a /bin/busybox too, linked dynamically.
    let installed = "dpkg-query -W -f='${db:Status-Status}' busybox-static | grep -qx installed";
    ensure(&["sh", "-c", installed], "busybox-static");
    let busybox = std::fs::read(BUSYBOX).expect("busybox-static's binary");
    let mut tarball = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_size(busybox.len() as u64);
    file.set_mode(0o755);
    tarball
        .append_data(&mut file, "bin/busybox", busybox.as_slice())
        .expect("busybox in the tarball");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o777);
    tarball
        .append_link(&mut link, "bin/sh", "busybox")
        .expect("/bin/sh in the tarball");
    let tarball = tarball.into_inner().expect("the shell image's tarball");
    let (repo, tag) = SHELL_IMAGE.split_once(':').expect("repository:tag");
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .build();
    let imported: Result<Vec<_>, _> = host
        .create_image(
            Some(options),
            Some(bollard::body_full(tarball.into())),
            None,
        )
        .try_collect()
        .await;
    imported.unwrap_or_else(|error| panic!("cannot import the shell image: {error}"));
}
