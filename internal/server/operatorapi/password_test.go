package operatorapi

import (
	"strings"
	"testing"
)

var testArgon2 = Argon2Params{Memory: 64, Time: 1, Threads: 1}

func TestPasswordRoundTrip(t *testing.T) {
	h := HashPassword("correct horse battery", testArgon2)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("HashPassword() = %q, want PHC argon2id format", h)
	}
	if !VerifyPassword("correct horse battery", h) {
		t.Error("VerifyPassword(right password) = false, want true")
	}
	if VerifyPassword("correct horse batterY", h) {
		t.Error("VerifyPassword(wrong password) = true, want false")
	}
	if h2 := HashPassword("correct horse battery", testArgon2); h2 == h {
		t.Error("two hashes of one password are equal, want distinct salts")
	}
}

func TestVerifyPasswordRejectsMalformedHashes(t *testing.T) {
	good := HashPassword("correct horse battery", testArgon2)
	parts := strings.Split(good, "$")
	for _, h := range []string{
		"",
		"plain",
		"$argon2i$v=19$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=16$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=4194304,t=1,p=1$" + parts[4] + "$" + parts[5], // 4 GiB: refused, not attempted
		"$argon2id$v=19$m=64,t=1000,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=1$!!$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$",
	} {
		if VerifyPassword("correct horse battery", h) {
			t.Errorf("VerifyPassword(pw, %q) = true, want false", h)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	for _, tt := range []struct {
		pw string
		ok bool
	}{
		{"short", false},
		{strings.Repeat("a", MinPasswordLen), true},
		{strings.Repeat("a", MaxPasswordLen), true},
		{strings.Repeat("a", MaxPasswordLen+1), false},
	} {
		if err := ValidatePassword(tt.pw); (err == nil) != tt.ok {
			t.Errorf("ValidatePassword(len %d) = %v, want ok=%v", len(tt.pw), err, tt.ok)
		}
	}
}
