"""A throw-away PKI for the TLS tests, made with the openssl command line:
a cluster CA, a server certificate for 127.0.0.1 / localhost, client
certificates, and a second CA that nobody trusts. Keys are EC P-256 so that
making a set takes a few tens of milliseconds."""
import hashlib
import os
import ssl
import subprocess


def _run(*argv):
    subprocess.run(["openssl", *argv], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


class PKI:
    def __init__(self, directory, name="cluster"):
        self.dir = directory
        self.name = name
        os.makedirs(directory, exist_ok=True)
        self.ca_key = self.path(f"{name}-ca.key")
        self.ca = self.path(f"{name}-ca.pem")
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", f"/CN={name} CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        os.chmod(self.ca_key, 0o600)

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, cn, sans=("IP:127.0.0.1", "DNS:localhost"), usage="serverAuth,clientAuth",
              days=2):
        """Makes a key and a certificate signed by this CA. Returns (cert, key)
        paths; the key file is private (0600) as a daemon expects."""
        key = self.path(f"{self.name}-{cn}.key")
        csr = self.path(f"{self.name}-{cn}.csr")
        cert = self.path(f"{self.name}-{cn}.pem")
        ext = self.path(f"{self.name}-{cn}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            f.write(f"extendedKeyUsage={usage}\n")
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        os.chmod(key, 0o600)
        _run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-CAcreateserial", "-out", cert, "-days", str(days), "-extfile", ext)
        return cert, key


def _der_fingerprint(der):
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fingerprint(cert_path):
    """The SHA-256 fingerprint of a PEM certificate, written as openssl does."""
    with open(cert_path) as f:
        return _der_fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


def served_fingerprint(port, host="127.0.0.1"):
    """The fingerprint of the certificate a TLS server on host:port serves
    (not verified: this is for telling which one it is)."""
    return _der_fingerprint(ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, port))))
