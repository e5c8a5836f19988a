// Package hostsamples holds the remote hosts that tests of the tunnel (tunnel/session) and of the API
// (test/integration) must classify alike: the denied ones in every notation, and ordinary ones close to
// them.
package hostsamples

// Denied are the metadata, credential and loopback endpoints in every notation a resolver or an
// IP parser accepts.
var Denied = []string{
	// EC2 instance metadata, IPv4 and IPv6, and its names.
	"169.254.169.254", "2852039166", "0xA9FEA9FE", "0xa9fea9fe", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe",
	"169.254.43518", "169.16689662", "0251.254.169.254", "[169.254.169.254]",
	"fd00:ec2::254", "[fd00:ec2::254]", "FD00:EC2::254", "fd00:0ec2:0000:0000:0000:0000:0000:0254",
	"::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
	"::169.254.169.254",
	"instance-data", "instance-data.ec2.internal", "INSTANCE-DATA.ec2.internal.", "instance-data.eu-west-1.compute.internal",
	// ECS task credentials and EKS Pod Identity.
	"169.254.170.2", "169.254.170.23", "fd00:ec2::23", "[fd00:ec2::23]",
	// Loopback and unspecified.
	"127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "017700000001", "127.255.255.254",
	"::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "0.0.0.0", "0", "::", "[::]",
	"localhost", "LOCALHOST", "localhost.", "db.localhost", "ip6-localhost", "ip6-loopback",
	// Link-local.
	"169.254.0.1", "fe80::1", "FE80::abcd", "fe80::1%eth0", "[fe80::1%25eth0]",
	// Other numeric notations of ordinary addresses: refused, since resolvers disagree on them.
	"10.1", "1", "012.0.0.1", "0x0a000001", "167772161",
	// IPv6 spellings of ordinary IPv4 addresses: refused whole.
	"::ffff:10.0.0.1", "64:ff9b::10.0.0.1", "2002:0a00:0001::1", "::10.0.0.1",
}

// Allowed are ordinary hosts, some close to denied ones.
var Allowed = []string{
	"db", "db.internal", "DB.Example.COM", "db.internal.", "10.0.0.5", "192.168.1.20", "172.16.0.1", "8.8.8.8",
	"fd00::5", "2001:db8::1", "[2001:db8::1]", "2001:db8::a9fe:a9fe",
	"instance-database.internal", "data-instance.internal", "mylocalhost", "localhost-db.internal",
	"xn--bcher-kva.example", "0x1.example.com", "1a.example", "db.123a",
}
