//! The checked-in CRDs in `crds/` equal what the Rust types generate, and their CEL rules behave.

use bqsteward::crd::{self, AccessEntry, DatasetAccess, IngestedTable, Role};

#[test]
fn checked_in_crds_match_the_rust_types() {
    let mut drift = Vec::new();
    for c in crd::all_crds() {
        let file = format!("crds/{}", crd::crd_file_name(&c));
        let generated = crd::crd_yaml(&c).unwrap();
        match std::fs::read_to_string(&file) {
            Ok(on_disk) if on_disk == generated => {}
            Ok(on_disk) => {
                let diff = similar::TextDiff::from_lines(&on_disk, &generated);
                drift.push(format!(
                    "{file} drifted:\n{}",
                    diff.unified_diff().header(&file, "generated")
                ));
            }
            Err(e) => drift.push(format!("{file}: {e}")),
        }
    }
    assert!(
        drift.is_empty(),
        "run `cargo run -- crds --out crds`\n{}",
        drift.join("\n")
    );
    // Besides the generated files, crds/ holds only its kustomization (listing exactly them), named
    // `Kustomization` so that `kubectl apply -f crds/` (which reads only *.yaml, *.yml, *.json) skips it.
    let on_disk: Vec<String> = std::fs::read_dir("crds")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "Kustomization")
        .collect();
    assert_eq!(
        on_disk.len(),
        crd::all_crds().len(),
        "crds/ holds files no kind generates: {on_disk:?}"
    );
    let kustomization = std::fs::read_to_string("crds/Kustomization").unwrap();
    for f in &on_disk {
        assert!(
            kustomization.contains(f.as_str()),
            "crds/Kustomization does not list {f}"
        );
    }
}

#[test]
fn every_kind_has_short_names_printer_columns_and_status() {
    for c in crd::all_crds() {
        let names = &c.spec.names;
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{}",
            names.kind
        );
        let v = &c.spec.versions[0];
        let cols = v.additional_printer_columns.as_ref().unwrap();
        assert!(cols.iter().any(|c| c.name == "Ready"), "{}", names.kind);
        assert!(v.subresources.as_ref().unwrap().status.is_some(), "{}", names.kind);
        let yaml = serde_yaml::to_string(&c).unwrap();
        assert!(
            yaml.contains("observedGeneration") && yaml.contains("x-kubernetes-list-type: map"),
            "{}",
            names.kind
        );
    }
}

fn sample<T: serde::de::DeserializeOwned>(file: &str) -> T {
    serde_yaml::from_str(&std::fs::read_to_string(format!("config/samples/{file}")).unwrap()).unwrap()
}

#[test]
fn destination_is_immutable_but_other_fields_are_not() {
    let old: IngestedTable = sample("payments-transactions.yaml");
    let mut moved = old.clone();
    moved.spec.destination.table = "transactions_v2".into();
    let err = kube::core::cel::validate_cel_update(&moved, &old).unwrap_err();
    assert!(err.to_string().contains("destination.table is immutable"), "{err}");

    let mut tuned = old.clone();
    tuned.spec.schedule.every = "5m".into();
    tuned.spec.clustering = vec!["modify_time".into()];
    kube::core::cel::validate_cel_update(&tuned, &old).unwrap();
}

#[test]
fn dataset_access_dataset_is_immutable_and_entries_name_one_principal() {
    let old: DatasetAccess = sample("payments-clean-access.yaml");
    kube::core::cel::validate_cel(&old).unwrap();
    let mut renamed = old.clone();
    renamed.spec.dataset = "other".into();
    assert!(
        kube::core::cel::validate_cel_update(&renamed, &old)
            .unwrap_err()
            .to_string()
            .contains("dataset is immutable")
    );

    let mut two = old.clone();
    two.spec.access.push(AccessEntry {
        role: Some(Role::Reader),
        user: Some("a@acme.com".into()),
        group: Some("g@acme.com".into()),
        ..Default::default()
    });
    let err = kube::core::cel::validate_cel(&two).unwrap_err();
    assert!(err.to_string().contains("exactly one principal"), "{err}");
}

#[test]
fn group_of_a_group_membership_is_immutable() {
    let old: crd::GroupMembership = sample("analysts-group.yaml");
    let mut other = old.clone();
    other.spec.group = "others@acme.com".into();
    assert!(
        kube::core::cel::validate_cel_update(&other, &old)
            .unwrap_err()
            .to_string()
            .contains("group is immutable")
    );
}

#[test]
fn role_aliases_normalise() {
    let e: AccessEntry = serde_yaml::from_str("{role: roles/bigquery.dataOwner, user: a@b.com}").unwrap();
    assert_eq!(e.role.unwrap().normalized(), Role::Owner);
    assert_eq!(Role::DataViewer.as_str(), "READER");
    assert_eq!(Role::DataEditor.as_str(), "WRITER");
}
