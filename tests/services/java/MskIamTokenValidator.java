// A broker-side SASL/OAUTHBEARER validator for the test broker that accepts exactly what
// Amazon MSK's IAM authentication accepts in shape: the token is the base64url (unpadded) text
// of a SigV4 presigned URL for https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect,
// signed for the service "kafka-cluster" (what aws-msk-iam-sasl-signer-python makes).
//
// It checks the URL's shape, the signing scope, the time window (X-Amz-Date .. + X-Amz-Expires,
// with 5 minutes of clock skew) and, for the access keys it is given, the SigV4 signature
// itself. It does not evaluate IAM policies (kafka-cluster:* actions), which real MSK does.
//
// JAAS options of the listener's OAuthBearerLoginModule:
//   region="us-east-1"  secrets="AKID1:SECRET1,AKID2:SECRET2"
// Accepted tokens' principal is the access key id; each decision is printed to stdout.
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.*;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;
import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerExtensionsValidatorCallback;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallback;

public class MskIamTokenValidator implements AuthenticateCallbackHandler {
    private String region = "us-east-1";
    private final Map<String, String> secrets = new HashMap<>();
    private static final DateTimeFormatter AMZ =
        DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC);

    @Override
    public void configure(Map<String, ?> configs, String mechanism, List<AppConfigurationEntry> jaas) {
        for (AppConfigurationEntry e : jaas) {
            Object r = e.getOptions().get("region");
            if (r != null) region = r.toString();
            Object s = e.getOptions().get("secrets");
            if (s != null) {
                for (String pair : s.toString().split(",")) {
                    int i = pair.indexOf(':');
                    if (i > 0) secrets.put(pair.substring(0, i), pair.substring(i + 1));
                }
            }
        }
    }

    @Override
    public void handle(Callback[] callbacks) throws UnsupportedCallbackException {
        for (Callback cb : callbacks) {
            if (cb instanceof OAuthBearerValidatorCallback) {
                OAuthBearerValidatorCallback v = (OAuthBearerValidatorCallback) cb;
                try {
                    OAuthBearerToken t = validate(v.tokenValue());
                    System.out.println("msk-iam-validator: accepted " + t.principalName());
                    v.token(t);
                } catch (Exception ex) {
                    System.out.println("msk-iam-validator: refused: " + ex.getMessage());
                    v.error("invalid_token", null, null);
                }
            } else if (cb instanceof OAuthBearerExtensionsValidatorCallback) {
                OAuthBearerExtensionsValidatorCallback ev = (OAuthBearerExtensionsValidatorCallback) cb;
                for (String k : ev.inputExtensions().map().keySet()) ev.valid(k);
            } else {
                throw new UnsupportedCallbackException(cb);
            }
        }
    }

    private static void require(boolean ok, String why) {
        if (!ok) throw new IllegalArgumentException(why);
    }

    private OAuthBearerToken validate(String token) throws Exception {
        require(token.matches("[A-Za-z0-9_-]+"), "not unpadded base64url");
        String url = new String(Base64.getUrlDecoder().decode(token), StandardCharsets.UTF_8);
        String host = "kafka." + region + ".amazonaws.com";
        String prefix = "https://" + host + "/?";
        require(url.startsWith(prefix), "not a presigned URL for " + host);
        Map<String, String> q = new TreeMap<>();
        for (String part : url.substring(prefix.length()).split("&")) {
            int i = part.indexOf('=');
            require(i > 0, "bad query parameter");
            String k = URLDecoder.decode(part.substring(0, i), StandardCharsets.UTF_8);
            require(!q.containsKey(k), "repeated parameter " + k);
            q.put(k, URLDecoder.decode(part.substring(i + 1), StandardCharsets.UTF_8));
        }
        require("kafka-cluster:Connect".equals(q.get("Action")), "Action is not kafka-cluster:Connect");
        require("AWS4-HMAC-SHA256".equals(q.get("X-Amz-Algorithm")), "not AWS4-HMAC-SHA256");
        require("host".equals(q.get("X-Amz-SignedHeaders")), "signed headers are not host");
        String[] cred = String.valueOf(q.get("X-Amz-Credential")).split("/");
        require(cred.length == 5 && cred[2].equals(region) && cred[3].equals("kafka-cluster")
                && cred[4].equals("aws4_request"), "credential scope is not <key>/<date>/" + region
                + "/kafka-cluster/aws4_request");
        String date = String.valueOf(q.get("X-Amz-Date"));
        Instant signed = Instant.from(AMZ.parse(date));
        require(cred[1].equals(date.substring(0, 8)), "scope date differs from X-Amz-Date");
        long expires = Long.parseLong(String.valueOf(q.get("X-Amz-Expires")));
        require(expires > 0 && expires <= 900, "X-Amz-Expires out of (0, 900]");
        Instant now = Instant.now();
        require(!signed.isAfter(now.plusSeconds(300)), "signed in the future");
        require(now.isBefore(signed.plusSeconds(expires)), "expired");
        String sig = String.valueOf(q.get("X-Amz-Signature"));
        require(sig.matches("[0-9a-f]{64}"), "signature is not 64 hex digits");
        String secret = secrets.get(cred[0]);
        require(secret != null, "unknown access key " + cred[0]);
        require(sig.equals(signature(q, host, cred, secret)), "signature does not match");
        long startMs = signed.toEpochMilli();
        long lifetimeMs = signed.plusSeconds(expires).toEpochMilli();
        String principal = cred[0];
        return new OAuthBearerToken() {
            public String value() { return token; }
            public Set<String> scope() { return Collections.emptySet(); }
            public long lifetimeMs() { return lifetimeMs; }
            public String principalName() { return principal; }
            public Long startTimeMs() { return startMs; }
        };
    }

    // SigV4 of a presigned GET: every query parameter but the signature (and the User-Agent the
    // signer appends after signing), the host header, and the empty payload's hash.
    private static String signature(Map<String, String> q, String host, String[] cred, String secret)
            throws Exception {
        StringBuilder cq = new StringBuilder();
        for (Map.Entry<String, String> e : q.entrySet()) {
            if (e.getKey().equals("X-Amz-Signature") || e.getKey().equals("User-Agent")) continue;
            if (cq.length() > 0) cq.append('&');
            cq.append(enc(e.getKey())).append('=').append(enc(e.getValue()));
        }
        String canonical = "GET\n/\n" + cq + "\nhost:" + host + "\n\nhost\n" + hex(sha256(new byte[0]));
        String scope = cred[1] + "/" + cred[2] + "/" + cred[3] + "/" + cred[4];
        String toSign = "AWS4-HMAC-SHA256\n" + q.get("X-Amz-Date") + "\n" + scope + "\n"
            + hex(sha256(canonical.getBytes(StandardCharsets.UTF_8)));
        byte[] k = hmac(("AWS4" + secret).getBytes(StandardCharsets.UTF_8), cred[1]);
        k = hmac(k, cred[2]);
        k = hmac(k, cred[3]);
        k = hmac(k, "aws4_request");
        return hex(hmac(k, toSign));
    }

    private static String enc(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8)
            .replace("+", "%20").replace("*", "%2A").replace("%7E", "~");
    }

    private static byte[] sha256(byte[] b) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(b);
    }

    private static byte[] hmac(byte[] key, String data) throws Exception {
        Mac m = Mac.getInstance("HmacSHA256");
        m.init(new SecretKeySpec(key, "HmacSHA256"));
        return m.doFinal(data.getBytes(StandardCharsets.UTF_8));
    }

    private static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x));
        return s.toString();
    }

    @Override
    public void close() {}
}
