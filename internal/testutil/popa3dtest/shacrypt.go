package popa3dtest

import (
	"crypto/rand"
	"crypto/sha512"
	"strings"
)

// cryptAlphabet is crypt(3)'s base-64 alphabet.
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// sha512Crypt returns the "$6$salt$hash" string crypt(3) (and so PAM's
// pam_unix) accepts for password, with the default 5000 rounds
// (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512"). salt is used as
// given, at most 16 characters of it.
func sha512Crypt(password, salt string) string {
	if len(salt) > 16 {
		salt = salt[:16]
	}
	p, s := []byte(password), []byte(salt)

	b := sha512.New()
	b.Write(p)
	b.Write(s)
	b.Write(p)
	sumB := b.Sum(nil)

	a := sha512.New()
	a.Write(p)
	a.Write(s)
	for n := len(p); n > 0; n -= 64 {
		a.Write(sumB[:min(n, 64)])
	}
	for n := len(p); n > 0; n >>= 1 {
		if n&1 == 1 {
			a.Write(sumB)
		} else {
			a.Write(p)
		}
	}
	sumA := a.Sum(nil)

	dp := sha512.New()
	for range len(p) {
		dp.Write(p)
	}
	sumDP := dp.Sum(nil)
	pSeq := make([]byte, 0, len(p))
	for n := len(p); n > 0; n -= 64 {
		pSeq = append(pSeq, sumDP[:min(n, 64)]...)
	}

	ds := sha512.New()
	for range 16 + int(sumA[0]) {
		ds.Write(s)
	}
	sSeq := ds.Sum(nil)[:len(s)]

	c := sumA
	for i := range 5000 {
		h := sha512.New()
		if i&1 == 1 {
			h.Write(pSeq)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sSeq)
		}
		if i%7 != 0 {
			h.Write(pSeq)
		}
		if i&1 == 1 {
			h.Write(c)
		} else {
			h.Write(pSeq)
		}
		c = h.Sum(nil)
	}

	var out strings.Builder
	out.WriteString("$6$" + salt + "$")
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for range n {
			out.WriteByte(cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	for i := range 21 {
		x, y, z := c[i], c[i+21], c[i+42]
		switch i % 3 {
		case 0:
			enc(x, y, z, 4)
		case 1:
			enc(y, z, x, 4)
		default:
			enc(z, x, y, 4)
		}
	}
	enc(0, 0, c[63], 2)
	return out.String()
}

// randomSalt returns 16 random characters of cryptAlphabet.
func randomSalt() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = cryptAlphabet[b[i]&0x3f]
	}
	return string(b[:])
}
