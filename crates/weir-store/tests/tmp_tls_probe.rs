use etcd_client::{Client, ConnectOptions, OpenSslClientConfig};
use openssl::x509::X509;
use weir_testkit::pki::TestCa;
use weir_testkit::Etcd;

async fn try_conn(ep: &str, cfg: OpenSslClientConfig) -> String {
    let mut c = match Client::connect([ep], Some(ConnectOptions::new().with_openssl_tls(cfg))).await {
        Ok(c) => c,
        Err(e) => return format!("connect err {e}"),
    };
    match c.status().await { Ok(_) => "ok".into(), Err(e) => format!("status err {e}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let ca = TestCa::new("weir test etcd CA");
    let etcd = Etcd::start_tls(&ca, true);
    let client = ca.issue("weir", &[], &[], true);
    let ep = etcd.endpoint();
    let (cp, kp, cap) = (client.cert_pem(), client.key_pem(), ca.cert_pem());
    eprintln!("A lib: {}", try_conn(&ep, OpenSslClientConfig::default().ca_cert_pem(cap.as_bytes()).client_cert_pem_and_key(cp.as_bytes(), kp.as_bytes())).await);
    let cac = X509::from_pem(cap.as_bytes()).unwrap();
    eprintln!("B manual add: {}", try_conn(&ep, OpenSslClientConfig::default().manually(move |b| { b.cert_store_mut().add_cert(cac)?; Ok(()) }).client_cert_pem_and_key(cp.as_bytes(), kp.as_bytes())).await);
    let cac = X509::from_pem(cap.as_bytes()).unwrap();
    let leaf = X509::from_pem(cp.as_bytes()).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(kp.as_bytes()).unwrap();
    eprintln!("C manual all: {}", try_conn(&ep, OpenSslClientConfig::default().manually(move |b| { b.cert_store_mut().add_cert(cac)?; b.set_certificate(&leaf)?; b.set_private_key(&key)?; Ok(()) })).await);
    let cac = X509::from_pem(cap.as_bytes()).unwrap();
    let leaf = X509::from_pem(cp.as_bytes()).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(kp.as_bytes()).unwrap();
    eprintln!("D manual all+check: {}", try_conn(&ep, OpenSslClientConfig::default().manually(move |b| { b.cert_store_mut().add_cert(cac)?; b.set_certificate(&leaf)?; b.set_private_key(&key)?; b.check_private_key()?; Ok(()) })).await);

    let cas = X509::stack_from_pem(cap.as_bytes()).unwrap();
    eprintln!("E stack: {} certs", cas.len());
    eprintln!("E stack: {}", try_conn(&ep, OpenSslClientConfig::default().manually(move |b| { for c in cas { b.cert_store_mut().add_cert(c)?; } Ok(()) }).client_cert_pem_and_key(cp.as_bytes(), kp.as_bytes())).await);
    let mut cfg = weir_config::EtcdSource { endpoints: vec![ep.clone()], prefix: "/weir".into(), timeout: std::time::Duration::from_secs(5), user: None, password: None, tls: None };
    let dir = std::env::temp_dir().join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &cap).unwrap();
    std::fs::write(dir.join("c.pem"), &cp).unwrap();
    std::fs::write(dir.join("k.pem"), &kp).unwrap();
    let p = |n: &str| Some(dir.join(n).to_string_lossy().into_owned());
    cfg.tls = Some(weir_config::EtcdTls { ca_file: p("ca.pem"), cert_file: p("c.pem"), key_file: p("k.pem"), verify: true });
    eprintln!("F mine: {:?}", weir_store::etcd::client::EtcdConn::connect(&cfg, &ep).await.map(|_| ()));
}
