package payload

import (
	"encoding/base64"
	"fmt"
	"mime"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

func encode(t *testing.T, e encoding.Encoding, s string) []byte {
	t.Helper()
	b, err := e.NewEncoder().Bytes([]byte(s))
	if err != nil {
		t.Fatalf("encoding %q: %v", s, err)
	}
	return b
}

// crlfJoin joins header and body lines with CRLF.
func crlfJoin(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

func bWord(label string, b []byte) string {
	return "=?" + label + "?B?" + base64.StdEncoding.EncodeToString(b) + "?="
}

func qWord(label string, b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == ' ':
			sb.WriteByte('_')
		case c >= 0x80 || c == '=' || c == '?' || c == '_' || c < 0x20:
			fmt.Fprintf(&sb, "=%02X", c)
		default:
			sb.WriteByte(c)
		}
	}
	return "=?" + label + "?Q?" + sb.String() + "?="
}

func b64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var lines []string
	for len(s) > 76 {
		lines = append(lines, s[:76])
		s = s[76:]
	}
	return strings.Join(append(lines, s), "\r\n")
}

// cjkCase is one charset with text a sender in that language writes; the
// strings include characters beyond the base standard where senders use
// them (GBK/GB18030 beyond GB2312, HKSCS in Big5, CP932 and CP949
// extensions).
type cjkCase struct {
	label    string
	enc      encoding.Encoding
	subject  string
	name     string
	body     string
	filename string
	sevenBit bool // ISO-2022-JP travels as 7bit
}

var cjkCases = []cjkCase{
	{label: "GB2312", enc: simplifiedchinese.GBK, subject: "关于报价单的问题", name: "张三",
		body: "您好，\n请查收附件中的报价单。\n谢谢！", filename: "报价单.pdf"},
	{label: "gbk", enc: simplifiedchinese.GBK, subject: "回复：镕基的订单（紧急）", name: "王小明",
		body: "镕基先生：\n订单已发货，请注意查收。", filename: "發貨單-镕.xlsx"},
	{label: "GB18030", enc: simplifiedchinese.GB18030, subject: "测试𠮷野家与€符号", name: "李四𠮷",
		body: "这是一封GB18030邮件，包含四字节字符𠮷和欧元符号€。", filename: "𠮷野家报告.docx"},
	{label: "big5", enc: traditionalchinese.Big5, subject: "請問產品保固期限", name: "陳大文",
		body: "你好，\n我哋嘅產品保固期限係幾耐？\n多謝！", filename: "保固證明書.pdf"},
	{label: "ISO-2022-JP", enc: japanese.ISO2022JP, subject: "お問い合わせの件について", name: "山田太郎",
		body: "お世話になっております。\n見積書を添付いたします。\nよろしくお願いいたします。", filename: "見積書.pdf", sevenBit: true},
	{label: "Shift_JIS", enc: japanese.ShiftJIS, subject: "【重要】請求書①の送付", name: "髙橋一郎",
		body: "いつもお世話になっております。\n請求書①を送付します。", filename: "請求書①.xlsx"},
	{label: "EUC-JP", enc: japanese.EUCJP, subject: "会議の日程調整", name: "佐藤花子",
		body: "来週の会議の日程を調整させてください。", filename: "議事録.txt"},
	{label: "EUC-KR", enc: korean.EUCKR, subject: "문의 드립니다", name: "김철수",
		body: "안녕하세요.\n견적서를 첨부합니다. 똠방각하", filename: "견적서.pdf"},
	{label: "ks_c_5601-1987", enc: korean.EUCKR, subject: "회신: 주문 확인", name: "이영희",
		body: "주문이 확인되었습니다.", filename: "주문서.hwp"},
}

func TestCJKGenerated(t *testing.T) {
	for _, c := range cjkCases {
		enc := c.enc
		for _, q := range []bool{false, true} {
			name := fmt.Sprintf("%s/Q=%v", c.label, q)
			t.Run(name, func(t *testing.T) {
				word := bWord
				if q {
					word = qWord
				}
				subj := encode(t, enc, c.subject)
				// Split the subject across two words in the middle of a
				// character where the encoding has multi-byte ones (not
				// for ISO-2022-JP, whose words must each be complete).
				subjectHeader := word(c.label, subj)
				if !c.sevenBit && len(subj) > 3 {
					cut := 3
					subjectHeader = word(c.label, subj[:cut]) + "\r\n " + word(c.label, subj[cut:])
				}
				fn := encode(t, enc, c.filename)
				body := encode(t, enc, strings.ReplaceAll(c.body, "\n", "\r\n"))
				html := encode(t, enc, "<p>"+c.body+"</p>")
				cte, bodyText := "base64", b64Lines(body)
				if c.sevenBit {
					cte, bodyText = "7bit", string(body)
				}
				msg := crlfJoin(
					"From: "+word(c.label, encode(t, enc, c.name))+" <sender@example.cn>",
					"To: support@example.com",
					"Subject: "+subjectHeader,
					"Date: Fri, 27 Nov 2026 12:59:00 +0800",
					"Message-ID: <gen-"+c.label+"@example.cn>",
					"MIME-Version: 1.0",
					`Content-Type: multipart/mixed; boundary="b1"`,
					"",
					"--b1",
					`Content-Type: multipart/alternative; boundary="b2"`,
					"",
					"--b2",
					"Content-Type: text/plain; charset="+c.label,
					"Content-Transfer-Encoding: "+cte,
					"",
					bodyText,
					"--b2",
					`Content-Type: text/html; charset="`+c.label+`"`,
					"Content-Transfer-Encoding: base64",
					"",
					b64Lines(html),
					"--b2--",
					"--b1",
					"Content-Type: application/octet-stream; name=\""+bWord(c.label, fn)+"\"",
					"Content-Disposition: attachment;",
					" filename*0*="+c.label+"''"+pctEncode(fn[:len(fn)/2])+";",
					" filename*1*="+pctEncode(fn[len(fn)/2:]),
					"Content-Transfer-Encoding: base64",
					"",
					b64Lines([]byte("%PDF-1.4 fake")),
					"--b1--",
				)
				d, _ := render(t, name, []byte(msg), Options{})
				m := d.Data
				if m.Subject != c.subject {
					t.Errorf("subject %q, want %q", m.Subject, c.subject)
				}
				if m.From == nil || m.From.Name != c.name || m.From.Address != "sender@example.cn" {
					t.Errorf("from %+v, want %q <sender@example.cn>", m.From, c.name)
				}
				if m.Text != c.body {
					t.Errorf("text %q, want %q", m.Text, c.body)
				}
				if m.HTML != "<p>"+c.body+"</p>" {
					t.Errorf("html %q", m.HTML)
				}
				if len(m.Attachments) != 1 || m.Attachments[0].Filename != c.filename {
					t.Errorf("attachments %+v, want one named %q", m.Attachments, c.filename)
				}
				if len(m.ParseErrors) > 0 {
					t.Errorf("parse_errors %q", m.ParseErrors)
				}
			})
		}
	}
}

func pctEncode(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// TestMislabelled covers text whose declared charset is missing or wrong
// and headers with raw 8-bit bytes.
func TestMislabelled(t *testing.T) {
	gbk := func(s string) string { return string(encode(t, simplifiedchinese.GBK, s)) }
	latin := func(s string) string { return string(encode(t, charmap.Windows1252, s)) }
	for _, c := range []struct {
		name         string
		msg          string
		subject      string
		fromName     string
		text         string
		filename     string
		errs         []string
		wantNoErrors bool
	}{
		{name: "us-ascii label, UTF-8 body",
			msg:  crlfJoin("Subject: x", "Content-Type: text/plain; charset=us-ascii", "", "Grüße aus Köln, 你好"),
			text: "Grüße aus Köln, 你好\n", subject: "x", errs: []string{`part 1: charset "us-ascii" but 8-bit text; read as utf-8`}},
		{name: "us-ascii label, GBK body",
			msg:  crlfJoin("Subject: x", "Content-Type: text/plain; charset=us-ascii", "", gbk("您好，请查收附件中的报价单。")),
			text: "您好，请查收附件中的报价单。\n", subject: "x", errs: []string{`charset "us-ascii" but 8-bit text; read as gb18030`}},
		{name: "no charset, windows-1252 body",
			msg:  crlfJoin("Subject: x", "", latin("Café, naïve façade – 20 €")),
			text: "Café, naïve façade – 20 €\n", subject: "x", errs: []string{"8-bit text without a charset; read as windows-1252"}},
		{name: "utf-8 label, GBK body",
			msg:  crlfJoin("Subject: x", "Content-Type: text/plain; charset=utf-8", "", gbk("发货通知单已经寄出")),
			text: "发货通知单已经寄出\n", subject: "x", errs: []string{"invalid UTF-8; read as gb18030"}},
		{name: "raw GBK display name and subject, body declares gbk",
			msg: crlfJoin("From: "+gbk("张三")+" <zhang@example.cn>", "Subject: "+gbk("报价单"),
				"Content-Type: text/plain; charset=gbk", "", gbk("正文")),
			subject: "报价单", fromName: "张三", text: "正文\n",
			errs: []string{"header Subject: unencoded 8-bit text read as gb18030", "header From: could not parse address list"}},
		{name: "raw GBK file name (RFC 2231 charset missing), hint from text part",
			msg: crlfJoin("Subject: x", `Content-Type: multipart/mixed; boundary="b"`, "", "--b",
				"Content-Type: text/plain; charset=gb2312", "", gbk("见附件"), "--b",
				`Content-Type: application/pdf; name="`+gbk("报价")+`.pdf"`, "Content-Disposition: attachment", "", "x", "--b--"),
			subject: "x", text: "见附件", filename: "报价.pdf"},
		{name: "UTF-7 body and encoded word",
			msg: crlfJoin("Subject: =?utf-7?Q?Hi_Mom_-+Jjo--!?= +ZeVnLIqe-", "Content-Type: text/plain; charset=UTF-7", "",
				"Hi Mom -+Jjo--! +ZeVnLIqe- A+ImIDkQ. 1 +- 1 = 2"),
			subject: "Hi Mom -☺-! +ZeVnLIqe-", text: "Hi Mom -☺-! 日本語 A≢Α. 1 + 1 = 2\n", wantNoErrors: true},
		{name: "unknown charset in one word does not spoil the others",
			msg:     crlfJoin("Subject: "+bWord("utf-8", []byte("Bestellung "))+" "+bWord("x-foo", []byte("Nr. 42"))+" "+qWord("iso-8859-1", []byte("f\xfcr Sie")), "", "x"),
			subject: "Bestellung Nr. 42für Sie", text: "x\n", errs: []string{`header Subject: unknown charset "x-foo" in encoded word; read as utf-8`}},
		{name: "mbox From line, leading white space, bare CR line endings",
			msg:     "\r\n  From sender@example.com Fri Nov 27 12:00:00 2026\rSubject: bare CR\rFrom: a@example.com\r\rline one\rline two\r",
			subject: "bare CR", text: "line one\nline two\n", wantNoErrors: true},
		{name: "part header with a broken line and junk after the boundary",
			msg: crlfJoin("Subject: x", `Content-Type: multipart/mixed; boundary="b"`, "", "--b  trailing junk",
				"Content-Type: text/plain;", "charset=utf-8", "", "héllo", "--b", "Content-Type: image/png",
				"Content-Disposition: attachment; filename=a.png", "Content-Transfer-Encoding: base64", "", "iVBO", "--b--"),
			subject: "x", text: "héllo", filename: "a.png", errs: []string{"part 1: header line without a colon joined to the previous field"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, _ := render(t, c.name, []byte(c.msg), Options{})
			m := d.Data
			if m.Subject != c.subject {
				t.Errorf("subject %q, want %q", m.Subject, c.subject)
			}
			if c.fromName != "" && (m.From == nil || m.From.Name != c.fromName) {
				t.Errorf("from %+v, want name %q", m.From, c.fromName)
			}
			if m.Text != c.text {
				t.Errorf("text %q, want %q", m.Text, c.text)
			}
			if c.filename != "" && (len(m.Attachments) == 0 || m.Attachments[0].Filename != c.filename) {
				t.Errorf("attachments %+v, want %q", m.Attachments, c.filename)
			}
			for _, e := range c.errs {
				if !slices.ContainsFunc(m.ParseErrors, func(s string) bool { return strings.Contains(s, e) }) {
					t.Errorf("parse_errors %q lack %q", m.ParseErrors, e)
				}
			}
			if c.wantNoErrors && len(m.ParseErrors) > 0 {
				t.Errorf("parse_errors %q, want none", m.ParseErrors)
			}
		})
	}
}

// TestWordsAgainstStdlib checks decodeWords against mime.WordDecoder on
// well-formed UTF-8 and Latin-1 words, where both must agree.
func TestWordsAgainstStdlib(t *testing.T) {
	var dec mime.WordDecoder
	for _, s := range []string{
		"=?UTF-8?B?44G+44G/44KA44KB44KC?=",
		"=?ISO-8859-1?Q?Eelanal=FC=FCsi_p=E4ring?=",
		"Re: =?utf-8?q?caf=C3=A9?= and =?utf-8?b?dGVh?=",
		"=?utf-8?Q?a?= =?utf-8?Q?b?=",
		"plain text, no words",
		"=?utf-8?Q?a?=  x  =?utf-8?Q?b?=",
	} {
		want, err := dec.DecodeHeader(s)
		if err != nil {
			t.Fatal(err)
		}
		got, probs := decodeWords(s, "")
		if got != want || len(probs) > 0 {
			t.Errorf("decodeWords(%q) = %q %q, want %q", s, got, probs, want)
		}
	}
}

// TestParamsAgainstStdlib checks parseParams on values mime.ParseMediaType
// reads, and the RFC 2231 charsets it drops.
func TestParamsAgainstStdlib(t *testing.T) {
	for _, v := range []string{
		`text/plain; charset="utf-8"; format=flowed`,
		`attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf`,
		`application/pdf; name*0="long "; name*1="name.pdf"`,
		`multipart/mixed; boundary="----=_Part_1"`,
	} {
		wt, wp, err := mime.ParseMediaType(v)
		if err != nil {
			t.Fatal(err)
		}
		gt, gp, ok := parseParams(v)
		if !ok || gt != wt || fmt.Sprint(gp) != fmt.Sprint(wp) {
			t.Errorf("parseParams(%q) = %q %v %v, want %q %v", v, gt, gp, ok, wt, wp)
		}
	}
	sjis := encode(t, japanese.ShiftJIS, "見積書.pdf")
	v := "attachment; filename*=shift_jis'ja'" + url.PathEscape(string(sjis))
	if _, p, _ := parseParams(v); p["filename"] != "見積書.pdf" {
		t.Errorf("Shift_JIS RFC 2231 filename = %q", p["filename"])
	}
	if _, p, ok := parseParams(`text/plain charset=utf-8; name="unterminated`); p["charset"] != "utf-8" || p["name"] != "unterminated" || ok {
		t.Errorf("lenient: %v", p)
	}
}

func TestDates(t *testing.T) {
	for in, want := range map[string]string{
		"Fri, 27 Nov 2026 12:59:00 +0800":             "2026-11-27T12:59:00+08:00",
		"Wed, 9 Jan 2002 19:47:50 MST":                "2002-01-09T19:47:50-07:00",
		"Wed, 28 May 2014 17:18:19 +0900 (JST)":       "2014-05-28T17:18:19+09:00",
		"Mon, 1 Jan 07 10:00:00 JST":                  "2007-01-01T10:00:00+09:00",
		"Thu, 13 Feb 1969 23:32 -0330 (Newfoundland)": "1969-02-13T23:32:00-03:30",
		"2026-11-27 12:59:00":                         "2026-11-27T12:59:00Z",
		"Fri Nov 27 12:59:00 2026":                    "2026-11-27T12:59:00Z",
		"not a date":                                  "",
	} {
		if got, _ := parseDate(in); got != want {
			t.Errorf("parseDate(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUTF7(t *testing.T) {
	for in, want := range map[string]string{
		"Hi Mom -+Jjo--!":   "Hi Mom -☺-!",
		"+ZeVnLIqe-":        "日本語",
		"A+ImIDkQ.":         "A≢Α.",
		"1 +- 1":            "1 + 1",
		"+2D3cAQ-":          "\U0001F401",
		"plain":             "plain",
		"+AGEAYgBj- tail+-": "abc tail+",
	} {
		if got, bad := decodeUTF7([]byte(in)); got != want || bad != 0 {
			t.Errorf("decodeUTF7(%q) = %q (%d bad), want %q", in, got, bad, want)
		}
	}
}
