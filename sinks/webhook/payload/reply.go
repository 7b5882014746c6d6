package payload

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// stripReply finds what the sender of a reply wrote: text without the
// quoted history and without the signature, and the signature apart.
// from is the sender's address (Foxmail signs with it by default);
// forwarded tells a message whose subject says it is forwarded ("Fw:").
//
// No Go library did this for the clients pophook's users have: the ones
// there are (mailstrip, emailreplyparser, email-reply-parser) port
// GitHub's or Zapier's English-only email_reply_parser and know neither
// QQ Mail's separator nor "写道：" or "のメール:". So the rules are a few
// tables here, tested against the labelled replies in
// testdata/replies (reply_test.go):
//
//   - A separator line ("-----Original Message-----", QQ Mail's
//     "------------------ 原始邮件 ------------------", NetEase's
//     "---- 回复的原邮件 ----"), a block of header lines (From/Sent/To/
//     Subject and their Chinese and Japanese labels, as Outlook, QQ Mail
//     and Foxmail insert them), or an attribution line that quotes no
//     ">" lines ends the reply: these clients quote everything after it
//     without marks, and nobody answers below them.
//   - ">" lines are quoted. An attribution line ("On … wrote:",
//     "在 … 写道：", "… のメール:", Gmail's Japanese "2026年11月27日(金)
//     10:00 山田太郎 <x@y>:"), wrapped over up to three lines, goes with
//     the quote it introduces. Quoted lines before the first and after the
//     last line of the sender's own are dropped, so top-posted and
//     bottom-posted replies both come out clean. When the sender answers
//     between quoted lines (an inline reply), the quotes between the
//     answers are kept: the answers mean nothing without them.
//   - A forwarded message ("---------- Forwarded message ---------",
//     "Begin forwarded message:", or Outlook's header block in a message
//     whose subject starts with "Fw:", "Fwd:", "转发：", "転送：") is the
//     sender's content: nothing after its marker is cut, and no signature
//     is split off (it would be the forwarded author's).
//   - A line of dashes or underscores belongs to the reply only when it
//     closes a box opened by another one (Japanese business signatures);
//     otherwise it is the rule Outlook draws above its header block.
//   - The signature starts at the last "-- " line (RFC 3676; "--" too,
//     since HTML rendering loses the space) with at most 15 lines after
//     it, or at a "Sent from my iPhone" line of a mobile client, or at a
//     last line that is the sender's own address.
//
// Both results are substrings of text, so stripping costs no copy of a
// body that may be 4 MiB. Every rule looks at one line and a few lines
// after it, so the time is linear.
func stripReply(text, from string, forwarded bool) (reply, signature string) {
	start, end, forward := replyBounds(text, forwarded)
	if start >= end {
		return "", ""
	}
	region := text[start:end]
	if forward {
		return strings.TrimRightFunc(region, unicode.IsSpace), ""
	}
	if sig := signatureStart(region, from); sig >= 0 {
		return strings.TrimRightFunc(region[:sig], unicode.IsSpace), trimLines(region[sig:])
	}
	return strings.TrimRightFunc(region, unicode.IsSpace), ""
}

// trimLines drops blank lines at both ends and trailing white space.
func trimLines(s string) string {
	for {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok || strings.TrimSpace(line) != "" {
			break
		}
		s = rest
	}
	return strings.TrimRightFunc(s, unicode.IsSpace)
}

// lineAt returns the line starting at i (without its "\n") and the index
// of the next line.
func lineAt(s string, i int) (string, int) {
	if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
		return s[i : i+j], i + j + 1
	}
	return s[i:], len(s)
}

// norm prepares a line for the patterns: NO-BREAK SPACE and IDEOGRAPHIC
// SPACE (which HTML renderings and CJK mailers put in separators) become
// spaces, and the ends are trimmed. Long lines are never separators.
func norm(line string) string {
	if len(line) > 600 {
		return ""
	}
	if hasWideSpace(line) {
		line = wideSpaces.Replace(line)
	}
	return strings.TrimSpace(line)
}

var wideSpaces = strings.NewReplacer("\u00a0", " ", "\u3000", " ")

// hasWideSpace reports whether line holds U+00A0 or U+3000, in one pass:
// searching for each in turn stops at every Japanese kana (which share
// U+3000's first byte).
func hasWideSpace(line string) bool {
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case 0xc2:
			if strings.HasPrefix(line[i:], "\u00a0") {
				return true
			}
		case 0xe3:
			if strings.HasPrefix(line[i:], "\u3000") {
				return true
			}
		}
	}
	return false
}

func isBlank(line string) bool { return strings.TrimSpace(line) == "" }

// isQuoted: a line quoted with ">", as every plain-text mailer quotes
// (and htmlToText renders blockquotes).
func isQuoted(line string) bool {
	t := strings.TrimLeft(line, " ")
	return len(line)-len(t) <= 3 && strings.HasPrefix(t, ">")
}

var (
	// separatorRE: lines after which a client quotes the original without
	// marks (Outlook, Thunderbird, QQ Mail and Foxmail, NetEase Mail
	// Master), and help desks' own "reply above this line".
	separatorRE = regexp.MustCompile(`(?i)^(-{2,}\s*(original message|original|replied message|reply message|原始邮件|原始郵件|邮件原件|郵件原件|原邮件|回复的原邮件|回覆的原郵件|元のメッセージ)\s*-{2,}` +
		`|.{0,40}\b(reply|respond|type|write) .{0,30}above this line\b.*)$`)

	// forwardRE: a forwarded message follows; it is content, not history.
	forwardRE = regexp.MustCompile(`(?i)^(-{2,}\s*(forwarded message|original forwarded message|forwarded|转发的邮件|转发邮件|轉寄的郵件|轉發的郵件|転送されたメッセージ|転送メッセージ)\s*-{2,}` +
		`|(begin forwarded message|以下为转发的邮件|转发的邮件|転送されたメッセージ)\s*[:：])$`)

	// Attribution lines. An English one starts with "On" and ends with
	// "wrote:"; the others end with their language's "wrote" or, in
	// Gmail's Japanese, with the address and a colon.
	onWroteRE   = regexp.MustCompile(`(?i)^on\s.{4,400}\swrote\s*:$`)
	wroteRE     = regexp.MustCompile(`(?i)\swrote\s*:$`)
	cjkWroteRE  = regexp.MustCompile(`(写道|寫道|のメッセージ|のメール|書きました)\s*[:：]$`)
	jaGmailRE   = regexp.MustCompile(`^\d{4}年\d{1,2}月\d{1,2}日.{0,300}[>＞]\s*[:：]$`)
	attrStartRE = regexp.MustCompile(`(?i)^(on\s|在\s?|\d{4}[-/年.])`)
	digitOrAtRE = regexp.MustCompile(`[0-9@]`)

	// forwardSubjectRE: the subject of a forwarded message.
	forwardSubjectRE = regexp.MustCompile(`(?i)^\s*(fwd?|转发|轉寄|轉發|転送)\s*[:：]`)
)

// endsColon: every attribution ends with a colon, so this cheap test keeps
// the regular expressions off almost every line.
func endsColon(s string) bool {
	return strings.HasSuffix(s, ":") || strings.HasSuffix(s, "：")
}

// The labels of the header lines clients insert above the original
// (Outlook, QQ Mail, Foxmail, in English, Chinese and Japanese): the From
// line that starts the block, and the others.
const (
	labelFrom = iota + 1
	labelOther
	labelSubject
)

var fieldLabels = map[string]int{
	"from": labelFrom, "发件人": labelFrom, "發件人": labelFrom, "寄件者": labelFrom, "寄件人": labelFrom, "差出人": labelFrom, "送信者": labelFrom,
	"sent": labelOther, "date": labelOther, "to": labelOther, "cc": labelOther, "发送时间": labelOther, "發送時間": labelOther,
	"时间": labelOther, "時間": labelOther, "日期": labelOther, "收件人": labelOther, "收件者": labelOther, "抄送": labelOther,
	"副本": labelOther, "寄件日期": labelOther, "送信日時": labelOther, "日時": labelOther, "日付": labelOther, "宛先": labelOther,
	"subject": labelSubject, "主题": labelSubject, "主題": labelSubject, "主旨": labelSubject, "件名": labelSubject,
}

// fieldLabel classifies a header line ("From: …", "*Sent:* …" in bold
// renderings, "发件人：…"). It is a map lookup rather than a regular
// expression: it runs on every line that may start a header block.
func fieldLabel(s string) int {
	s = strings.TrimLeft(s, "*")
	head := s[:min(len(s), 40)]
	i := strings.IndexByte(head, ':')
	if j := strings.Index(head, "："); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i <= 0 {
		return 0
	}
	label := strings.TrimRight(s[:i], " \t*")
	var buf [16]byte
	if len(label) <= len(buf) && isASCIIStr(label) {
		for k := 0; k < len(label); k++ {
			c := label[k]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[k] = c
		}
		return fieldLabels[string(buf[:len(label)])]
	}
	return fieldLabels[label]
}

// attribution tells whether s (one line, or up to three joined) introduces
// a quote. strong ones (with a date or an address) introduce one even when
// no ">" lines follow; weak ones ("John wrote:") only when they do.
func attribution(s string) (ok, strong bool) {
	switch {
	case !endsColon(s) || len(s) > 600:
		return false, false
	case onWroteRE.MatchString(s), jaGmailRE.MatchString(s) && strings.Contains(s, "@"):
		return true, digitOrAtRE.MatchString(s)
	case wroteRE.MatchString(s), cjkWroteRE.MatchString(s):
		return true, digitOrAtRE.MatchString(s)
	}
	return false, false
}

// replyAttribution checks for an attribution starting at the line at i,
// which mailers wrap when the name and address are long. It returns the
// index after its last line.
func replyAttribution(text string, i int) (next int, ok, strong bool) {
	line, n1 := lineAt(text, i)
	s := norm(line)
	if ok, strong := attribution(s); ok {
		return n1, true, strong
	}
	if s == "" || n1 >= len(text) {
		return 0, false, false
	}
	// A wrapped attribution: one of the next two lines ends it.
	var parts [2]string
	at := n1
	for k := range parts {
		if at >= len(text) {
			return 0, false, false
		}
		var next string
		next, at = lineAt(text, at)
		t := norm(next)
		if t == "" || isQuoted(next) {
			return 0, false, false
		}
		parts[k] = t
		if !endsColon(t) {
			continue
		}
		if !attrStartRE.MatchString(s) && !strings.Contains(s, "@") {
			return 0, false, false
		}
		joined := s + " " + parts[0]
		if k == 1 {
			joined += " " + parts[1]
		}
		if ok, strong := attribution(joined); ok {
			return at, true, strong
		}
		return 0, false, false
	}
	return 0, false, false
}

// quoteFollows reports whether a ">" line comes at i after at most a few
// blank lines.
func quoteFollows(text string, i int) bool {
	for k := 0; k < 4 && i < len(text); k++ {
		line, next := lineAt(text, i)
		if isQuoted(line) {
			return true
		}
		if !isBlank(line) {
			return false
		}
		i = next
	}
	return false
}

// headerBlock reports whether the line at i starts the header lines a
// client puts above the original: a From line and at least two other
// fields within the next lines, one of them the subject. Every client's
// block has a subject; a customer's "From: Shanghai / To: Hamburg" has
// none.
func headerBlock(text string, i int) bool {
	line, next := lineAt(text, i)
	if fieldLabel(norm(line)) != labelFrom {
		return false
	}
	// Fields follow one another; blank lines (HTML renderings) and up to
	// two lines of a wrapped To or Cc list may stand between them.
	seen, subject, misses := 0, false, 0
	for k := 0; k < 10 && next < len(text) && misses <= 2; k++ {
		var l string
		l, next = lineAt(text, next)
		s := norm(l)
		switch label := fieldLabel(s); {
		case s == "":
		case label == labelOther || label == labelSubject:
			seen, misses = seen+1, 0
			subject = subject || label == labelSubject
			if seen >= 2 && subject {
				return true
			}
		default:
			misses++
		}
	}
	return false
}

// isRule: a line of underscores, dashes or equals signs, as Outlook draws
// above its header block. Neither reply nor quote.
func isRule(s string) bool {
	return len(s) >= 8 && strings.Trim(s, "_-=") == ""
}

// replyBounds returns the byte range of text that the sender wrote,
// signature included; forward tells that it ends with a forwarded
// message.
func replyBounds(text string, forwarded bool) (start, end int, forward bool) {
	firstT, lastEnd, firstQ := -1, 0, -1
	quoteAfterText, inline := false, false
	boxOpen, afterText := false, false // a rule line opened a box; the last line was text
	for i := 0; i < len(text); {
		line, next := lineAt(text, i)
		s := norm(line)
		wasText := afterText
		afterText = false
		switch {
		case isBlank(line):
		case isQuoted(line):
			if firstT < 0 {
				if firstQ < 0 {
					firstQ = i
				}
			} else {
				quoteAfterText = true
			}
		case mayForward(s) && forwardRE.MatchString(s), forwarded && (isSeparator(s) || headerBlock(text, i)):
			// Everything from here on is the sender's to give.
			if firstT < 0 {
				firstT = i
			}
			inline = inline || quoteAfterText
			start, end := bounds(text, firstT, firstQ, inline, len(text))
			return start, end, true
		case isSeparator(s), headerBlock(text, i):
			start, end := bounds(text, firstT, firstQ, inline, lastEnd)
			return start, end, false
		case isRule(s):
			if wasText && boxOpen {
				lastEnd, boxOpen = i+len(line), false
			} else if firstT >= 0 {
				boxOpen = true
			}
		default:
			if after, ok, strong := replyAttribution(text, i); ok {
				if quoteFollows(text, after) {
					next = after
					break
				}
				if strong {
					start, end := bounds(text, firstT, firstQ, inline, lastEnd)
					return start, end, false
				}
			}
			if firstT < 0 {
				firstT = i
			}
			inline = inline || quoteAfterText
			lastEnd = i + len(line)
			afterText = true
		}
		i = next
	}
	start, end = bounds(text, firstT, firstQ, inline, lastEnd)
	return start, end, false
}

func isSeparator(s string) bool {
	return (strings.HasPrefix(s, "--") || containsFoldASCII(s[:min(len(s), 120)], "above this line")) &&
		separatorRE.MatchString(s)
}

// containsFoldASCII reports whether s contains needle (lower-case ASCII)
// as strings.Contains(strings.ToLower(s), needle) would, without
// lower-casing a copy of every line: ASCII letters in either case, and
// the two runes Go lower-cases to ASCII letters, İ (U+0130) to i and the
// Kelvin sign (U+212A) to k.
func containsFoldASCII(s, needle string) bool {
	for i := range len(s) {
		k, j := i, 0
		for ; j < len(needle) && k < len(s); j++ {
			c := s[k]
			switch {
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			case c == 0xc4 && strings.HasPrefix(s[k:], "\u0130"):
				c, k = 'i', k+1
			case c == 0xe2 && strings.HasPrefix(s[k:], "\u212a"):
				c, k = 'k', k+2
			}
			if c != needle[j] {
				break
			}
			k++
		}
		if j == len(needle) {
			return true
		}
	}
	return false
}

func mayForward(s string) bool { return strings.HasPrefix(s, "--") || endsColon(s) }

func bounds(text string, firstT, firstQ int, inline bool, end int) (int, int) {
	if firstT < 0 {
		return 0, 0
	}
	start := firstT
	if inline && firstQ >= 0 {
		start = firstQ
	}
	return start, end
}

var (
	// mobileSigRE: the lines mobile and desktop mail apps append by
	// default. Matched against a whole line near the end only.
	mobileSigRE = regexp.MustCompile(`(?i)^(sent from my .{2,40}` +
		`|sent from (mail|outlook|yahoo mail|gmail|aol|proton ?mail|samsung|huawei|xiaomi|blackberry)\b.{0,40}` +
		`|get outlook for (ios|android)\b.{0,60}` +
		`|(发自|來自|来自|發自)(我的|网易邮箱|網易郵箱|qq邮箱|手机qq邮箱|outlook|wps|iphone|ipad).{0,30}` +
		`|(从|從)我的.{1,20}(发送|傳送)` +
		`|从 ?windows ?版邮件发送` +
		`|获取 ?outlook for (ios|android)\b.{0,60}` +
		`|.{1,30}から送信` +
		`|(ios|android) ?版 ?outlook.{0,60}を入手)$`)
)

// mayBeMobile keeps mobileSigRE off lines that cannot match it.
func mayBeMobile(s string) bool {
	s = strings.TrimLeft(s, " \t\u00a0")
	if hasPrefixFold(s, "sent ") || hasPrefixFold(s, "get ") || strings.HasSuffix(s, "から送信") || strings.HasSuffix(s, "を入手") {
		return true
	}
	for _, m := range []string{"发自", "發自", "来自", "來自", "我的", "获取", "版邮件"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// maxAfterMobile bounds the lines after a "Sent from my iPhone" line:
// the apps put it last, and further up the same words are the sender's.
const maxAfterMobile = 3

// maxSigLines bounds what follows a "-- " line for it to be taken for a
// signature delimiter rather than a rule in the text.
const maxSigLines = 15

// signatureStart returns where the signature starts in region, or -1.
func signatureStart(region, from string) int {
	delim, mobile, lastStart := -1, -1, -1
	after := 0 // non-blank lines after the candidate delimiter
	mobileAfter := 0
	for i := 0; i < len(region); {
		line, next := lineAt(region, i)
		t := strings.TrimRight(line, " \t\u00a0")
		switch {
		case t == "--":
			delim, after = i, 0
		case isBlank(line):
		default:
			after++
			if mobile >= 0 {
				if mobileAfter++; mobileAfter > maxAfterMobile {
					mobile = -1
				}
			}
			if mobile < 0 && mayBeMobile(t) && utf8.RuneCountInString(t) <= 80 && mobileSigRE.MatchString(norm(line)) {
				mobile, mobileAfter = i, 0
			}
			lastStart = i
		}
		i = next
	}
	if delim >= 0 && after > maxSigLines {
		delim = -1
	}
	start := -1
	for _, c := range []int{delim, mobile} {
		if c >= 0 && (start < 0 || c < start) {
			start = c
		}
	}
	// Foxmail's default signature is the sender's address on its own,
	// after a short rule that the text rendering loses.
	if from != "" && lastStart > 0 && (start < 0 || lastStart < start) {
		last, _ := lineAt(region, lastStart)
		if strings.EqualFold(norm(last), from) && isBlank(lineBefore(region, lastStart)) {
			start = lastStart
		}
	}
	return start
}

// lineBefore returns the line that ends just before index i (a line
// start).
func lineBefore(s string, i int) string {
	if i == 0 {
		return ""
	}
	j := strings.LastIndexByte(s[:i-1], '\n')
	return s[j+1 : i-1]
}
