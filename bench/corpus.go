package bench

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

// A Corpus is a deterministic set of realistic messages: the same seed,
// count and target give the same bytes on every machine.
//
// Most messages are small (1 KiB to 48 KiB) plain or multipart/alternative
// text; about one in ten carries one or two base64 attachments (PDF,
// JPEG, ZIP, XLSX) of 32 KiB to 256 KiB, and one in a hundred a large
// one (1 MiB to 6 MiB). The attachment sizes are scaled together so that
// the whole set comes close to the target size. Bodies and headers come
// in US-ASCII, UTF-8, GBK, Big5, ISO-2022-JP, Shift_JIS and ISO-8859-1,
// with RFC 2047 encoded words in From, Subject and attachment names,
// base64, quoted-printable, 8bit and 7bit transfer encodings, threading
// headers, folded DKIM signatures and lines that need dot-stuffing.
type Corpus struct {
	Seed  uint64
	plans []msgPlan
	scale float64 // applied to attachment sizes
}

type msgKind int

const (
	kindPlain  msgKind = iota
	kindAlt            // multipart/alternative, text and HTML
	kindAttach         // multipart/mixed with attachments
	kindHuge           // multipart/mixed with one large attachment
)

type msgPlan struct {
	kind    msgKind
	cs      int   // index into charsets
	text    int   // bytes of body text, before transfer encoding
	attach  []int // raw bytes of each attachment, before scaling
	rawMIME bool  // the attachment sizes are not scaled (small corpus)
}

// NewCorpus plans n messages whose sizes add up to about target bytes.
func NewCorpus(seed uint64, n int, target int64) *Corpus {
	c := &Corpus{Seed: seed, plans: make([]msgPlan, n), scale: 1}
	var fixed, att float64
	for i := range c.plans {
		r := rand.New(rand.NewPCG(seed, uint64(2*i)))
		p := msgPlan{cs: pickCharset(r)}
		switch x := r.Float64(); {
		case x < 0.01:
			p.kind = kindHuge
			p.attach = []int{1<<20 + r.IntN(5<<20)}
		case x < 0.11:
			p.kind = kindAttach
			for range 1 + r.IntN(2) {
				p.attach = append(p.attach, 32<<10+r.IntN(224<<10))
			}
		case x < 0.40:
			p.kind = kindAlt
		default:
			p.kind = kindPlain
		}
		// Text: log-uniform from 600 bytes to 40 KiB.
		p.text = int(600 * math.Exp(r.Float64()*math.Log(40*1024/600.0)))
		c.plans[i] = p
		fixed += 2200 + float64(p.text)*p.textFactor()
		for _, a := range p.attach {
			att += float64(a) * 4 / 3 * 77 / 76
		}
	}
	if att > 0 && float64(target) > fixed {
		c.scale = min(20, max(0.02, (float64(target)-fixed)/att))
	}
	return c
}

// NewSmallCorpus plans n small messages (1 KiB to 8 KiB, no attachments).
func NewSmallCorpus(seed uint64, n int) *Corpus {
	c := &Corpus{Seed: seed, plans: make([]msgPlan, n), scale: 1}
	for i := range c.plans {
		r := rand.New(rand.NewPCG(seed, uint64(2*i)))
		p := msgPlan{cs: pickCharset(r), kind: kindPlain}
		if r.IntN(3) == 0 {
			p.kind = kindAlt
		}
		p.text = 300 + r.IntN(3000)
		c.plans[i] = p
	}
	return c
}

// textFactor is roughly how much larger the body gets than its text.
func (p msgPlan) textFactor() float64 {
	f := 1.0
	if charsets[p.cs].cte == "base64" {
		f = 1.37
	}
	if p.kind != kindPlain {
		f *= 2.3 // the HTML twin
	}
	return f
}

// Len is the number of messages.
func (c *Corpus) Len() int { return len(c.plans) }

// Message returns message i (0-based), with LF line endings.
func (c *Corpus) Message(i int) []byte {
	p := c.plans[i]
	r := rand.New(rand.NewPCG(c.Seed, uint64(2*i+1)))
	var b bytes.Buffer
	b.Grow(p.text*3 + 4096)
	cs := charsets[p.cs]
	date := time.Date(2026, 1, 5, 8, 0, 0, 0, time.FixedZone("", cs.tz)).Add(time.Duration(i)*97*time.Second + time.Duration(r.IntN(60))*time.Second)
	writeHeaders(&b, r, cs, i, date)
	switch p.kind {
	case kindPlain:
		fmt.Fprintf(&b, "Content-Type: text/plain; charset=%s\nContent-Transfer-Encoding: %s\n\n", cs.label(), cs.cte)
		writeEncoded(&b, cs, cs.cte, textBody(r, cs, p.text))
	case kindAlt:
		boundary := fmt.Sprintf("----=_Part_%d_%d.%d", i, r.IntN(1e6), date.Unix())
		fmt.Fprintf(&b, "Content-Type: multipart/alternative;\n\tboundary=\"%s\"\n\nThis is a multi-part message in MIME format.\n\n", boundary)
		writeAlternative(&b, r, cs, boundary, p.text)
		fmt.Fprintf(&b, "--%s--\n", boundary)
	case kindAttach, kindHuge:
		outer := fmt.Sprintf("=_mixed_%016x", r.Uint64())
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\n\n", outer)
		fmt.Fprintf(&b, "--%s\n", outer)
		if r.IntN(2) == 0 {
			inner := fmt.Sprintf("=_alt_%016x", r.Uint64())
			fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=\"%s\"\n\n", inner)
			writeAlternative(&b, r, cs, inner, p.text)
			fmt.Fprintf(&b, "--%s--\n\n", inner)
		} else {
			fmt.Fprintf(&b, "Content-Type: text/plain; charset=%s\nContent-Transfer-Encoding: %s\n\n", cs.label(), cs.cte)
			writeEncoded(&b, cs, cs.cte, textBody(r, cs, p.text))
			b.WriteString("\n")
		}
		for k, size := range p.attach {
			if !p.rawMIME {
				size = int(float64(size) * c.scale)
			}
			fmt.Fprintf(&b, "--%s\n", outer)
			writeAttachment(&b, r, cs, k, size)
		}
		fmt.Fprintf(&b, "--%s--\n", outer)
	}
	return b.Bytes()
}

// BigMessage is a message of about size bytes whose body is parts base64
// attachments of equal size, for peak-RSS runs.
func BigMessage(seed uint64, size, parts int) []byte {
	c := &Corpus{Seed: seed, scale: 1}
	each := int(float64(size-8000) / float64(parts) * 3 / 4 * 76 / 77)
	p := msgPlan{kind: kindAttach, cs: 0, text: 2000, rawMIME: true}
	for range parts {
		p.attach = append(p.attach, each)
	}
	c.plans = []msgPlan{p}
	return c.Message(0)
}

type charset struct {
	name string // MIME name
	enc  encoding.Encoding
	lang int
	cte  string // body transfer encoding
	tz   int    // the sender's UTC offset, seconds
}

func (cs charset) label() string {
	if strings.ContainsAny(cs.name, "-_") {
		return `"` + cs.name + `"`
	}
	return cs.name
}

const (
	langEN = iota
	langSC // simplified Chinese
	langTC // traditional Chinese
	langJA
	langDE
	langMixed // UTF-8: all of them
)

var charsets = []charset{
	{"us-ascii", nil, langEN, "7bit", -5 * 3600},
	{"UTF-8", unicode.UTF8, langMixed, "8bit", 0},
	{"UTF-8", unicode.UTF8, langMixed, "base64", 1 * 3600},
	{"GBK", simplifiedchinese.GBK, langSC, "base64", 8 * 3600},
	{"GBK", simplifiedchinese.GBK, langSC, "8bit", 8 * 3600},
	{"GB18030", simplifiedchinese.GB18030, langSC, "base64", 8 * 3600},
	{"Big5", traditionalchinese.Big5, langTC, "base64", 8 * 3600},
	{"ISO-2022-JP", japanese.ISO2022JP, langJA, "7bit", 9 * 3600},
	{"Shift_JIS", japanese.ShiftJIS, langJA, "base64", 9 * 3600},
	{"ISO-8859-1", charmap.ISO8859_1, langDE, "quoted-printable", 1 * 3600},
}

// charsetWeights are the relative frequencies of charsets, in order.
var charsetWeights = []int{20, 8, 7, 10, 5, 3, 10, 15, 10, 12}

func pickCharset(r *rand.Rand) int {
	total := 0
	for _, w := range charsetWeights {
		total += w
	}
	x := r.IntN(total)
	for i, w := range charsetWeights {
		if x < w {
			return i
		}
		x -= w
	}
	return 0
}

var (
	enWords = strings.Fields(`the a support ticket order invoice shipment delayed refund please
customer account password reset thanks regards hello urgent request update status number
reference attached see below yesterday today tomorrow meeting agenda notes review question
answer problem fixed our your team will would could we have has been with for from about`)

	scSentences = []string{
		"您好，我们的订单已经发货了，请查收附件中的发票。",
		"如有任何问题，请随时与客服联系，谢谢！",
		"关于上周的会议纪要，请各位同事审阅并提出修改意见。",
		"系统将于本周六凌晨进行维护升级，届时服务可能会中断。",
		"退款申请已经受理，预计三到五个工作日内到账。",
		"请在本月底之前提交季度报告和费用报销单。",
		"附件是最新的产品价格表，请注意查收。",
		"感谢您的耐心等待，我们会尽快处理您的问题。",
	}
	tcSentences = []string{
		"您好，您的訂單已經出貨，請查收附件中的發票。",
		"關於上週的會議記錄，請各位同事審閱並提出修改意見。",
		"系統將於本週六凌晨進行維護升級，屆時服務可能會中斷。",
		"退款申請已經受理，預計三到五個工作天內入帳。",
		"如有任何問題，請隨時與客服聯絡，謝謝！",
		"附件是最新的產品報價單，請注意查收。",
	}
	jaSentences = []string{
		"お世話になっております。",
		"ご注文の商品を本日発送いたしました。",
		"添付の請求書をご確認ください。",
		"会議の議事録を共有いたします。ご確認のほどよろしくお願いいたします。",
		"システムメンテナンスのため、土曜日の深夜にサービスを停止いたします。",
		"返金の手続きが完了しましたのでお知らせいたします。",
		"ご不明な点がございましたら、お気軽にお問い合わせください。",
		"今後ともよろしくお願い申し上げます。",
	}
	deSentences = []string{
		"Sehr geehrte Damen und Herren,",
		"vielen Dank für Ihre Bestellung über unseren Onlineshop.",
		"Die Rückerstattung wird in den nächsten Tagen überwiesen.",
		"Bitte prüfen Sie die beigefügte Rechnung für März.",
		"Mit freundlichen Grüßen aus Köln, Jürgen Müller",
		"Zoë hat das Protokoll der Besprechung geschickt; à bientôt.",
	}

	names = map[int][]string{
		langEN: {"John Smith", "Mary Johnson", "Acme Billing", "Ops Team"},
		langSC: {"张伟", "王芳", "李娜", "刘洋", "客服中心"},
		langTC: {"陳志明", "林美玲", "黃建宏", "客服部"},
		langJA: {"山田太郎", "佐藤花子", "鈴木一郎", "カスタマーサポート"},
		langDE: {"Jürgen Müller", "Zoë Schäfer", "Björn Groß"},
	}
	subjects = map[int][]string{
		langEN: {"Your order has shipped", "Invoice for March", "Password reset request", "Meeting notes", "Urgent: account locked"},
		langSC: {"订单发货通知", "三月份发票", "关于会议纪要的确认", "系统维护升级通知", "退款申请已受理"},
		langTC: {"訂單出貨通知", "三月份發票", "會議記錄確認", "系統維護升級通知"},
		langJA: {"ご注文の発送のお知らせ", "請求書送付のご案内", "議事録の共有", "システムメンテナンスのお知らせ"},
		langDE: {"Ihre Bestellung über unseren Shop", "Rechnung für März", "Rückerstattung veranlasst"},
	}
	attachNames = map[int][]string{
		langEN: {"invoice", "report", "scan", "export"},
		langSC: {"发票", "报价单", "会议纪要", "合同"},
		langTC: {"發票", "報價單", "會議記錄"},
		langJA: {"請求書", "見積書", "議事録"},
		langDE: {"Rechnung", "Übersicht", "Protokoll"},
	}
)

// langOf picks a language for the text of a message in cs.
func langOf(r *rand.Rand, cs charset) int {
	if cs.lang == langMixed {
		return []int{langEN, langSC, langTC, langJA, langDE}[r.IntN(5)]
	}
	return cs.lang
}

// textBody returns about size bytes (once encoded in cs) of text lines.
func textBody(r *rand.Rand, cs charset, size int) string {
	lang := langOf(r, cs)
	var b strings.Builder
	n := 0 // encoded bytes so far, estimated
	perRune := 1.0
	switch lang {
	case langSC, langTC, langJA:
		perRune = 2
		if cs.name == "UTF-8" {
			perRune = 3
		}
	}
	width := 72
	if perRune > 1 {
		width = 34
	}
	line := 0 // runes on the current line
	for n < size {
		var s string
		switch lang {
		case langEN:
			s = enWords[r.IntN(len(enWords))] + " "
		case langSC:
			s = scSentences[r.IntN(len(scSentences))]
		case langTC:
			s = tcSentences[r.IntN(len(tcSentences))]
		case langJA:
			s = jaSentences[r.IntN(len(jaSentences))]
		case langDE:
			s = deSentences[r.IntN(len(deSentences))] + " "
		}
		if line == 0 && lang == langEN && r.IntN(40) == 0 {
			s = "." + s // needs dot-stuffing on the wire
		}
		for _, c := range s {
			if line >= width && (perRune > 1 || c == ' ') {
				b.WriteByte('\n')
				n++
				line = 0
				if c == ' ' {
					continue
				}
			}
			b.WriteRune(c)
			line++
			if c < utf8.RuneSelf {
				n++
			} else {
				n += int(perRune)
			}
		}
		if r.IntN(12) == 0 {
			b.WriteString("\n\n")
			n += 2
			line = 0
		}
	}
	b.WriteByte('\n')
	return b.String()
}

// encode converts UTF-8 text to cs.
func encode(cs charset, s string) []byte {
	if cs.enc == nil || cs.name == "UTF-8" {
		return []byte(s)
	}
	out, err := cs.enc.NewEncoder().String(s)
	if err != nil {
		panic(fmt.Sprintf("bench: %q cannot hold the text %q: %v", cs.name, s, err))
	}
	return []byte(out)
}

// writeEncoded writes text in cs with the transfer encoding cte.
func writeEncoded(b *bytes.Buffer, cs charset, cte, text string) {
	raw := encode(cs, text)
	switch cte {
	case "base64":
		writeBase64(b, raw)
	case "quoted-printable":
		var q bytes.Buffer
		w := quotedprintable.NewWriter(&q)
		w.Write(raw)
		w.Close()
		b.Write(bytes.ReplaceAll(q.Bytes(), []byte("\r\n"), []byte("\n")))
		b.WriteByte('\n')
	default:
		b.Write(raw)
	}
}

func writeBase64(b *bytes.Buffer, raw []byte) {
	var line [76]byte
	for len(raw) > 0 {
		n := min(57, len(raw))
		m := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(line[:m], raw[:n])
		b.Write(line[:m])
		b.WriteByte('\n')
		raw = raw[n:]
	}
}

func writeAlternative(b *bytes.Buffer, r *rand.Rand, cs charset, boundary string, size int) {
	text := textBody(r, cs, size)
	fmt.Fprintf(b, "--%s\nContent-Type: text/plain; charset=%s\nContent-Transfer-Encoding: %s\n\n", boundary, cs.label(), cs.cte)
	writeEncoded(b, cs, cs.cte, text)
	cte := cs.cte
	if cte == "8bit" || (cte == "7bit" && cs.name == "us-ascii") {
		cte = "quoted-printable"
	}
	fmt.Fprintf(b, "\n--%s\nContent-Type: text/html; charset=%s\nContent-Transfer-Encoding: %s\n\n", boundary, cs.label(), cte)
	var h strings.Builder
	fmt.Fprintf(&h, "<!DOCTYPE html>\n<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=%s\"></head>\n<body style=\"font-family: Arial, sans-serif; font-size: 14px;\">\n", cs.name)
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		h.WriteString("<p>")
		for i, l := range strings.Split(para, "\n") {
			if i > 0 {
				h.WriteString("<br>\n")
			}
			if i == 1 {
				h.WriteString(`<a href="https://example.com/ticket/12345?ref=mail">`)
			}
			h.WriteString(l)
			if i == 1 {
				h.WriteString("</a>")
			}
		}
		h.WriteString("</p>\n")
	}
	h.WriteString("</body></html>\n")
	writeEncoded(b, cs, cte, h.String())
	b.WriteString("\n")
}

var attachTypes = []struct{ ext, ctype, magic string }{
	{"pdf", "application/pdf", "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"},
	{"jpg", "image/jpeg", "\xff\xd8\xff\xe0\x00\x10JFIF\x00"},
	{"zip", "application/zip", "PK\x03\x04\x14\x00\x00\x00\x08\x00"},
	{"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "PK\x03\x04\x14\x00\x06\x00"},
}

func writeAttachment(b *bytes.Buffer, r *rand.Rand, cs charset, k, size int) {
	t := attachTypes[r.IntN(len(attachTypes))]
	lang := langOf(r, cs)
	base := attachNames[lang][r.IntN(len(attachNames[lang]))]
	name := fmt.Sprintf("%s-%d.%s", base, k+1, t.ext)
	// Content-Type name= as RFC 2047 (what Outlook and many Chinese
	// clients send), Content-Disposition filename*= as RFC 2231.
	nameCS := cs
	if nameCS.enc == nil || !canEncode(nameCS, name) {
		nameCS = charsets[1]
	}
	fmt.Fprintf(b, "Content-Type: %s;\n\tname=\"%s\"\n", t.ctype, encodedWords(nameCS, name, "\n\t"))
	b.WriteString("Content-Transfer-Encoding: base64\n")
	if isASCII(name) {
		fmt.Fprintf(b, "Content-Disposition: attachment; filename=\"%s\"\n\n", name)
	} else {
		fmt.Fprintf(b, "Content-Disposition: attachment;\n\tfilename*=UTF-8''%s\n\n", strings.ReplaceAll(url.PathEscape(name), "+", "%2B"))
	}
	raw := make([]byte, max(size, len(t.magic)))
	copy(raw, t.magic)
	for i := len(t.magic); i < len(raw); i += 8 {
		v := r.Uint64()
		for j := i; j < min(i+8, len(raw)); j++ {
			raw[j] = byte(v)
			v >>= 8
		}
	}
	writeBase64(b, raw)
	b.WriteString("\n")
}

func canEncode(cs charset, s string) bool {
	if cs.enc == nil {
		return isASCII(s)
	}
	_, err := cs.enc.NewEncoder().String(s)
	return err == nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// encodedWords encodes s (UTF-8) as RFC 2047 words in cs, each well
// within 75 characters and each holding whole characters (and, for
// ISO-2022-JP, returning to ASCII), joined by sep.
func encodedWords(cs charset, s, sep string) string {
	if isASCII(s) {
		return s
	}
	if cs.name == "ISO-8859-1" {
		return mime.QEncoding.Encode(cs.name, string(encode(cs, s)))
	}
	var words []string
	runes := []rune(s)
	for start := 0; start < len(runes); {
		end := start
		for end < len(runes) && len(encode(cs, string(runes[start:end+1]))) <= 36 {
			end++
		}
		end = max(end, start+1)
		words = append(words, "=?"+cs.name+"?B?"+base64.StdEncoding.EncodeToString(encode(cs, string(runes[start:end])))+"?=")
		start = end
	}
	return strings.Join(words, sep)
}

var domains = map[int][]string{
	langEN: {"example.org", "customer.example.net"},
	langSC: {"example.cn", "163.example.com", "qq.example.com"},
	langTC: {"example.tw", "example.hk"},
	langJA: {"example.jp", "example.co.jp"},
	langDE: {"example.de", "example.at"},
}

func writeHeaders(b *bytes.Buffer, r *rand.Rand, cs charset, i int, date time.Time) {
	lang := langOf(r, cs)
	dom := domains[lang][r.IntN(len(domains[lang]))]
	user := fmt.Sprintf("user%d", r.IntN(500))
	from := user + "@" + dom
	fmt.Fprintf(b, "Return-Path: <%s>\n", from)
	fmt.Fprintf(b, "Delivered-To: support@example.com\n")
	for hop := range 2 + r.IntN(3) {
		t := date.Add(time.Duration(3-hop) * time.Second)
		fmt.Fprintf(b, "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mail.example.com (Postfix) with ESMTPS id %X\n\tfor <support@example.com>; %s\n",
			hop, dom, hop, dom, r.IntN(250)+1, r.Uint32(), t.Format(time.RFC1123Z))
	}
	fmt.Fprintf(b, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=sel%d;\n\th=from:to:subject:date:message-id:mime-version:content-type;\n\tbh=%s;\n\tb=", dom, r.IntN(3), randB64(r, 32))
	sig := randB64(r, 256)
	for len(sig) > 0 {
		n := min(70, len(sig))
		b.WriteString(sig[:n])
		sig = sig[n:]
		if len(sig) > 0 {
			b.WriteString("\n\t ")
		}
	}
	b.WriteString("\n")
	ns := names[lang]
	name := ns[r.IntN(len(ns))]
	hcs := cs
	if hcs.name == "us-ascii" && !isASCII(name) {
		hcs = charsets[1]
	}
	if isASCII(name) {
		fmt.Fprintf(b, "From: %q <%s>\n", name, from)
	} else {
		fmt.Fprintf(b, "From: %s <%s>\n", encodedWords(hcs, name, " "), from)
	}
	b.WriteString("To: Support <support@example.com>\n")
	if r.IntN(4) == 0 {
		fmt.Fprintf(b, "Cc: %s <team@example.com>\n", encodedWords(hcs, ns[r.IntN(len(ns))], " "))
	}
	subj := subjects[lang][r.IntN(len(subjects[lang]))]
	prefix := ""
	reply := r.IntN(10) < 3
	if reply {
		prefix = "Re: "
	}
	fmt.Fprintf(b, "Subject: %s%s #%d\n", prefix, encodedWords(hcs, subj, "\n "), 10000+i)
	fmt.Fprintf(b, "Date: %s\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(b, "Message-ID: <%x.%d@%s>\n", r.Uint64(), i, dom)
	if reply {
		parent := fmt.Sprintf("<%x.%d@example.com>", r.Uint64(), r.IntN(1e6))
		fmt.Fprintf(b, "In-Reply-To: %s\nReferences: <%x@example.com>\n %s\n", parent, r.Uint64(), parent)
	}
	if r.IntN(30) == 0 {
		b.WriteString("Auto-Submitted: auto-replied\n")
	}
	mailers := []string{"Microsoft Outlook 16.0", "Foxmail 7.2.25", "Apple Mail (2.3774)", "Becky! ver. 2.81", "Thunderbird 128.0"}
	fmt.Fprintf(b, "X-Mailer: %s\n", mailers[r.IntN(len(mailers))])
	b.WriteString("MIME-Version: 1.0\n")
}

func randB64(r *rand.Rand, n int) string {
	raw := make([]byte, n)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	return base64.StdEncoding.EncodeToString(raw)
}
