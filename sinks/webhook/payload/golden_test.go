package payload

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pophook/pophook/internal/testutil/testcorpus"
)

// golden holds what a person reading each message sees in it, written from
// the files themselves (decoding charsets with other tools where the bytes
// are not readable), not from this package's output.
type golden struct {
	file      string
	subject   string
	fromName  string
	fromAddr  string   // "" with fromName "" means "from" is null
	to        []string // addresses, in order
	cc        []string
	replyTo   []address
	text      []string // each must occur in text; nil means text is ""
	html      []string // likewise for html
	fromHTML  bool     // text was rendered from html (no text/plain body)
	atts      []string // attachment file names, in order
	date      string   // RFC 3339, "" when the message has none or a bad one
	messageID string
	inReplyTo string
	refs      []string
	auto      bool
	errs      []string // each must occur in some parse error
}

var goldens = []golden{
	// multi_charset: every file.
	{file: "multi_charset/japanese.eml", subject: "まみむめも", fromName: "Mikel Lindsaar", fromAddr: "raasdnil@gmail.com",
		to: []string{"raasdnil@gmail.com"}, text: []string{"かきくえこ\n\n-- \nhttp://lindsaar.net/"}},
	{file: "multi_charset/japanese_attachment.eml", subject: "testing", fromName: "Mikel Lindsaar", fromAddr: "raasdnil@gmail.com",
		to: []string{"raasdnil@gmail.com"}, text: []string{"testing\n\n-- \nhttp://lindsaar.net/"}, atts: []string{"てすと.txt"},
		date: "2009-10-16T23:39:34+11:00", messageID: "<57a815bf0910160539m64240421gb35ea52e101aedbc@mail.gmail.com>"},
	{file: "multi_charset/japanese_attachment_long_name.eml", subject: strings.Repeat("まみむめも", 10),
		fromName: "Mikel Lindsaar", fromAddr: "mikel@test.lindsaar.net", to: []string{"raasdnil@gmail.com"},
		atts: []string{strings.Repeat("かきくけこ", 5) + ".txt"}, date: "2009-10-30T19:11:02+11:00"},
	{file: "multi_charset/japanese_iso_2022.eml", subject: "まみむめも", fromName: "Mikel Lindsaar", fromAddr: "raasdnil@gmail.com",
		to: []string{"raasdnil@gmail.com"}, text: []string{"すみません。"}},
	{file: "multi_charset/japanese_shift_jis.eml", subject: "test", fromAddr: "xxxxxxx@docomo.ne.jp", to: []string{"unknown@example.com"},
		text: []string{"あいうえお", "このメールはテスト用のメールです。", "今後ともよろしくお願い申し上げます！"},
		date: "2014-05-28T17:18:19+09:00", messageID: "<xxxxx@docomo.ne.jp>"},
	{file: "multi_charset/ks_c_5601-1987.eml", subject: "test", fromAddr: "from@example.com", to: []string{"unknown@example.com"},
		text: []string{"스티해"}, date: "2014-05-28T17:18:19+09:00"},

	// error_emails: every file.
	{file: "error_emails/bad_date_header.eml", subject: "You may_be Eligible for Legitimate_Cash from_GovAgencies!",
		fromName: "Grants-Notification", fromAddr: "infoz@reactive-outpost.com", to: []string{"someone@yahoo.com"},
		inReplyTo: "someone@yahoo.com", auto: true, errs: []string{"header Date: could not parse date"}},
	{file: "error_emails/bad_date_header2.eml", subject: "40% OFF holiday patterns and fabric!",
		fromName: "Free-Quilting.com", fromAddr: "enews@Free-Quilting.com", to: []string{"someone@live.com"},
		messageID: "<201012150659.oBF6xAuc018214@drg.drgnetwork.com>",
		errs:      []string{"header Date: could not parse date", "multipart/alternative has no parts"}},
	{file: "error_emails/bad_encoded_subject.eml", subject: "TEST", text: []string{"TEST"},
		errs: []string{`header Subject: unknown charset "none" in encoded word`}},
	{file: "error_emails/bad_subject.eml", subject: "MySurvey.com:  You have a survey waiting!  91123105",
		fromName: "MySurvey.com & Carol Adams", fromAddr: "carol@mysurvey.com", to: []string{"someone@aol.com"},
		replyTo: []address{{"", "carol@reply.mysurvey.com"}},
		text:    []string{"You have a survey waiting!\n\n\nTo take the survey:"}, html: []string{"<center>\nhello world\n</center>"},
		date: "2010-12-15T12:21:20-05:00"},
	{file: "error_emails/cant_parse_from.eml", subject: "Meet the new MacBook Pro family. Now includes 13-inch.",
		fromName: "Apple", fromAddr: "News@InsideApple.Apple.com", to: []string{"karl.baum@gmail.com"},
		text: []string{"From one solid piece of aluminum comes a MacBook Pro that's thin and light, beautifully streamlined, and durable."},
		html: []string{`durable.<br><a href="http://insideapple.app`}, date: "2009-06-11T23:25:02-07:00",
		messageID: "<7oh6b1$1clhrjk@badger-vip.apple.com>"},
	{file: "error_emails/content_transfer_encoding_7-bit.eml", subject: "Discover(R) Card News Online - January 2002",
		fromName: "Discover Card", fromAddr: "discovercard_newsflash@discover.qrs1.net", to: []string{"emclaug@enron.com"},
		replyTo: []address{{"", "discovercard_newsflash@discover.qrs1.net"}},
		text:    []string{"DISCOVERÆ CARD", "It's a new year and time for new beginnings."}, html: []string{"new beginnings"},
		date: "2002-01-09T19:47:50-07:00", messageID: "<101BN3c3ce68600277550d@bounce.quris.net>"},
	{file: "error_emails/content_transfer_encoding_empty.eml", subject: "4d8119¡@(¤j¸ÉªwÄÑ±M½æ) ¤j®a»¡\u00ad^»y ¨C¤éÅ¥MP3 (2004¦~6¤ë¥÷) ÁcÅé¤¤¤å¥úºÐª© (\u00ad^»y±Ð¾Ç)¡@8afb90",
		fromAddr: "3712f2@msa.hinet.net", to: []string{"brucegemini@yahoo.com.tw"},
		html: []string{"<html>\n<body>", "http://toolbar.yahoo.com.hk"}, messageID: "<11107978796724623>",
		text: []string{"9bbf38a544f990e73cd12f3c56c60e6180edebd31d752d3997fa4c0650d6aaa338f73f", "\n_____", " Yahoo! ", " http://toolbar.yahoo.com.hk"}, fromHTML: true},
	{file: "error_emails/content_transfer_encoding_plain.eml", subject: "bookkeeping Get in on IGTS asap.",
		fromName: "shavonda Cabral", fromAddr: "baocqccyw@hq.lindsayelec.com", to: []string{"em-ca-bruceg@em.ca"},
		text: []string{"Exciting Easter Investor Alert", "ìIGTSî."}, date: "2005-03-27T19:11:59-06:00",
		errs: []string{`charset "us-ascii" but 8-bit text; read as utf-8`}},
	{file: "error_emails/content_transfer_encoding_qp_with_space.eml", subject: "Low or High Blood Pressure? We can help.",
		fromName: "Wilmer Capps", fromAddr: "fyouizjnp@swissonline.ch", to: []string{"bait-passover@em.ca"},
		text: []string{"If you're in need of a good RX site for online purchases, we are your answer."},
		html: []string{`we are your answer.<br>`, `<a href="http://magyar8stator.com/26">Lots More Info Here</a>`},
		date: "2004-11-07T18:23:56-03:00"},
	{file: "error_emails/content_transfer_encoding_spam.eml", subject: "",
		fromName: "neal ragland", fromAddr: "shechem@poetrix.com", to: []string{"vladi.Pimenov@enron.com"},
		text: []string{"We supply high quality medications"}, date: "2001-08-19T06:31:03-07:00",
		messageID: "<35FDF82F.D000339@poetrix.com>", errs: []string{`unknown Content-Transfer-Encoding "7vladi.Pimenovit"`}},
	{file: "error_emails/content_transfer_encoding_text-html.eml", subject: "Re: We will help you refinance your home.",
		fromName: "chianfong cuthbert", fromAddr: "abhijit.862153drinnan@datavalet.com", to: []string{"cvs@bruce-guenter.dyndns.org"},
		cc: []string{"rait@bruce-guenter.dyndns.org"}, html: []string{"You have qualified for the lowest rate in years.<br>"},
		text: []string{"Hello,\n\nYou have qualified for the lowest rate in years.\nYou could get over $400,000 for as little as $500 a month.",
			"Best Regards,\nchianfong cuthbert, Account Manager\nReynolds Associates, LLC"}, fromHTML: true,
		date: "2005-05-06T15:55:01+04:00"},
	{file: "error_emails/content_transfer_encoding_with_8bits.eml", subject: "The Original Advantage #e13011",
		fromName: "announcements@provantage.com", fromAddr: "announcements@provantage.com", to: []string{"jeff_dasovich@enron.com"},
		html: []string{"<title>PROVANTAGE.COM : The Original Advantage</title>"}, date: "2001-12-04T17:11:25-04:59",
		text: []string{"December 04, 2001\n", "Holiday Gift Ideas for the Computer Professional!\n"}, fromHTML: true},
	{file: "error_emails/content_transfer_encoding_with_semi_colon.eml", subject: "Attention",
		fromName: "Shelby", fromAddr: "nsukijamq@morozstudio.tk", to: []string{"cvs@bruce-guenter.dyndns.org"},
		text: []string{"You have been pre-approved for a $402,000 Home Loan at a 3.45% Fixed Rate."},
		html: []string{"<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=us-ascii\">"},
		date: "2005-06-29T22:57:10-06:00"},
	{file: "error_emails/content_transfer_encoding_x_uuencode.eml", subject: "PGP Comments on RTO West Release of Dec. 14",
		fromName: "Lon L. Peters", fromAddr: "lpeters@PACIFIER.COM", to: []string{"RRGA-L@LIST.RTOWEST.ORG"},
		text: []string{"Attached are the comments of the Public Generating Pool."}, atts: []string{"PGP_Cmts_on_12-14-01_Pkg.doc"},
		date: "2002-01-10T13:59:53-08:00", messageID: "<p05100307b863befdfb67@[207.202.136.216]>",
		inReplyTo: "<1168BAF252B7D41194810001028D743108913C@SERVER>", refs: []string{"<1168BAF252B7D41194810001028D743108913C@SERVER>"},
		errs: []string{`part 2: unknown Content-Transfer-Encoding "x-uuencode"`}},
	{file: "error_emails/empty_group_lists.eml", subject: "Western Union Swift Money Transfer",
		fromName: "Cecil Edwards", fromAddr: "ceciledwards@sbcglobal.net", to: []string{},
		replyTo: []address{{"", "western.uniontransfer1@hotmail.fr"}},
		text:    []string{"Attention Beneficiary:\n\u00a0\nThis is to officially informed you that we have concluded arrangements to effect your payment"},
		html:    []string{"Beneficiary"}, date: "2009-12-03T10:50:22-08:00", messageID: "<203751.85280.qm@web82107.mail.mud.yahoo.com>"},
	{file: "error_emails/empty_in_reply_to.eml", subject: "illegal copy of our patient education software",
		fromName: "Andrey Kuznetsov", fromAddr: "ak@g.com", to: []string{"abuser@r.ru"}, replyTo: []address{{"", "ak@g.com"}},
		date: "2009-09-19T19:49:36+04:00", messageID: "<F194F88AF3E341A6B2B135CC17912811@articondell>", auto: true,
		errs: []string{"multipart/related has no parts"}},
	{file: "error_emails/encoding_madness.eml", subject: "eBay Bid - 2008 Ford Super Duty F-350 DRW King Ranch Crew Cab 4x4 (156) - Stock# XXXX",
		fromAddr: "no-reply@crm.el-example.org", to: []string{"e-f5f4@app.ar-example.com"},
		replyTo: []address{{"KLAUS- HÄNSCHEL", ""}}, text: []string{"Body Text"}, date: "2010-09-22T02:30:53-05:00",
		messageID: "<201009220730.o8M7Urh3018672@aquila.el-example.org>", errs: []string{"header Reply-To: could not parse address list"}},
	{file: "error_emails/header_fields_with_empty_values.eml", subject: "Testmail",
		fromName: "Jørn Støylen", fromAddr: "jorn@prikkprikkprikk.no", to: []string{"aftest@adfontesmedier.no"},
		text: []string{"--\nJørn Støylen -- http://www.prikkprikkprikk.no\n924 38 051"}, date: "2009-10-30T20:07:42+01:00",
		messageID: "<4FDC124A-1FC4-4B29-8502-E459BD9AB397@prikkprikkprikk.no>"},
	{file: "error_emails/invalid_subject_characters.eml", subject: "Formação FrenetikPolis: Mega Campanha Final Verão | Cursos de Setembro",
		fromName: "Formação Frenetikpolis", fromAddr: "info@formacaofrenetik.info",
		to: []string{"martin@internet.ao", "iris@internet.ao", "support@maxnet.ao"}, text: []string{"TEST"},
		errs: []string{"header Subject: unencoded 8-bit text read as windows-1252"}},
	{file: "error_emails/missing_body.eml", subject: "REDACTED", fromName: "SCS_2", fromAddr: "redacted@attglobal.net",
		to: []string{}, date: "2001-11-27T15:02:35-08:00", messageID: "<001301c17797$9cd0ef30$a3ab620c@vaio>",
		errs: []string{"header To: could not parse address list", "multipart/mixed has no parts"}},
	{file: "error_emails/missing_content_disposition.eml", subject: "Redacted", fromAddr: "redacted@example.com",
		to: []string{"redacted@example.com"}, atts: []string{"somefile.jpg"}, date: "2002-01-22T14:35:28Z",
		messageID: "<200201221435.g0MEZP927213@mailman.enron.com>"},
	{file: "error_emails/multiple_content_types.eml", subject: "Redacted", fromAddr: "redacted@flashmail.net",
		to: []string{"redacted@Enron.com"}, text: []string{"foo"}, html: []string{"<p>foo</p>"},
		messageID: "<105647271315.NCV17523@x263.net>"},
	{file: "error_emails/multiple_invalid_content_dispositions.eml", subject: "Redacted", fromAddr: "redacted@flashmail.net",
		to: []string{"redacted@Enron.com"}, html: []string{"<p>foo</p>"}, errs: []string{"part 1: malformed Content-Disposition"},
		text: []string{"foo"}, fromHTML: true},
	{file: "error_emails/multiple_references_with_one_invalid.eml", subject: "Redacted", fromAddr: "redacted@flashmail.net",
		to: []string{"redacted@Enron.com"}, text: []string{"foo"}, html: []string{"<p>foo</p>"},
		refs: []string{"<foo@bar.net>", "<baz@bar.net>", "<invalid.something@bar.net>"},
		errs: []string{"header line without a colon joined to the previous field"}},
	{file: "error_emails/must_supply_encoding.eml", subject: "Impress your clients with a business phone\uFFFD\uFFFD\uFFFD",
		fromName: "Biz Phone Systems from EclipseMediaOnline\uFFFD\uFFFD", fromAddr: "info@here2there-travelers-msgs.net",
		to: []string{"anyone@YAHOO.COM"}, date: "2010-11-14T17:41:44Z", errs: []string{"multipart/alternative has no parts"}},
	{file: "error_emails/new_line_in_to_header.eml", subject: "[Online Lead] Online Lead #1111111", fromAddr: "l@gcn-example.com",
		to:   []string{"leads@sg.dc.com", "sag@leads.gs.ry.com", "sn@example-hotmail.com", "e-s-a-g-8718@app.ar.com", "jp@t-exmaple.com", "cc@c-l-example.com"},
		text: []string{`<?xml version="1.0" encoding="UTF-8"?>`}, date: "2010-10-13T07:53:04-07:00"},
	{file: "error_emails/trademark_character_in_subject.eml", subject: "GA.comô has a lead for you", fromAddr: "j@yahoo-example.com",
		to: []string{"c@ra-example.com", "e-r-w-a-4462@app.ar.com", "leads@ga-example.com"}, text: []string{"Body Text - not important"},
		date: "2010-10-12T16:21:05Z", errs: []string{"has no valid time zone; read as UTC"}},
	{file: "error_emails/weird_to_header.eml", subject: "", fromAddr: "anonymous@i.tp.host",
		to: []string{"user-example@aol.com", "e-s-a-s-2200@app.ar.com"}, text: []string{"CONTACT:", "PAGE THEY WERE ON:"},
		date: "2010-10-14T23:25:06-04:00", messageID: "<20101015032506.28448.qmail@i.tp.host>"},

	// Others.
	{file: "attachment_emails/attachment_nonascii_filename.eml", subject: "testing", fromAddr: "foo@example.com",
		to: []string{"blah@example.com"}, text: []string{"This is the first part."}, atts: []string{"ciële.txt"},
		date: "2005-06-06T22:21:22+02:00"},
	{file: "attachment_emails/attachment_with_quoted_filename.eml", subject: "Eelanalüüsi päring",
		fromName: "Jeffrey Hardy", fromAddr: "jeff@37signals.com", to: []string{"jeff@37signals.com"},
		atts: []string{"Eelanalüüsi päring.jpg"}, date: "2009-05-13T11:42:01-04:00"},
	{file: "attachment_emails/attachment_message_rfc822_inline_image.eml", subject: "test", fromAddr: "test@example.com",
		to: []string{"foo@example.com"}, html: []string{`<img src="cid:emedfeb92f-a786-4718-a446-98db8afb53fb@kronos" />`},
		atts: []string{"img.png", "Testmail.eml"}, date: "2020-04-21T15:40:22+02:00", fromHTML: true},
	{file: "mime_emails/raw_email_with_mimepart_without_content_type.eml", subject: "Warning: could not send message for past 1 day",
		fromName: "Mail Delivery Subsystem", fromAddr: "MAILER-DAEMON@antivirus.uqam.ca", to: []string{"roor32@gmail.com"},
		text: []string{"Warning: message still undelivered after 1 day"}, atts: []string{"", "Est-ce toi ?.eml"},
		date: "2006-10-20T04:28:33-04:00", auto: true},
	{file: "plain_emails/raw_email.eml", subject: "NOTE: 한국말로 하는 것", fromName: "Jamis Buck", fromAddr: "jamis@37signals.com",
		to: []string{"willard15georgina@jamis.backpackit.com"}, text: []string{"대부분의 마찬가지로, 우리는 하나님을 믿습니다.\n\n제 이름은 Jamis입니다."},
		date: "2005-05-02T16:07:05-06:00"},
	{file: "plain_emails/raw_email_multiple_from.eml", subject: "/home/svn/public/minebox revision 214",
		fromAddr: "tim@powerupdev.com", to: []string{"tim@powerupdev.com", "concierge@powerupdev.com"},
		date: "2007-10-22T23:45:23Z", text: []string{"recordkick"}, errs: []string{"header From: could not parse address list"}},
	{file: "rfc2822/example10.eml", fromName: "Pete", fromAddr: "pete@silly.test",
		to: []string{"c@public.example", "joe@example.org", "jdoe@one.test"}, cc: []string{},
		text: []string{"Testing."}, date: "1969-02-13T23:32:00-03:30", messageID: "<testabcd.1234@silly.test>"},
	{file: "rfc2822/example14.eml", subject: "Re: TEST テストテスト", fromName: "Atsushi Yoshida", fromAddr: "atsushi@example.com",
		to: []string{"rudeboyjet@gmail.com"}, replyTo: []address{{"", "rudeboyjet@gmail.com"}}, text: []string{"Hello"},
		date: "2011-08-19T10:47:17+09:00", inReplyTo: "<rid_5582199198@msgid.example.com>"},
	{file: "rfc6532/utf8_headers.eml", subject: "Säying Hello", fromName: "Jöhn Doe", fromAddr: "jdöe@mächine.example",
		to: []string{"märy@exämple.net"}, text: []string{"body"}},
}

func TestGolden(t *testing.T) {
	root := testcorpus.Dir(t)
	root = filepath.Join(root, "mikel-mail")
	// Every file of these two folders must have an entry.
	have := map[string]bool{}
	for _, g := range goldens {
		have[g.file] = true
	}
	for _, dir := range []string{"multi_charset", "error_emails"} {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if !have[dir+"/"+e.Name()] {
				t.Errorf("no golden entry for %s/%s", dir, e.Name())
			}
		}
	}
	for _, g := range goldens {
		t.Run(g.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, g.file))
			if err != nil {
				t.Fatal(err)
			}
			d, _ := render(t, g.file, testcorpus.CRLF(data), Options{})
			m := d.Data
			if m.Subject != g.subject {
				t.Errorf("subject %q, want %q", m.Subject, g.subject)
			}
			switch {
			case g.fromAddr == "" && g.fromName == "":
				if m.From != nil {
					t.Errorf("from %+v, want null", *m.From)
				}
			case m.From == nil:
				t.Errorf("from null, want %q <%s>", g.fromName, g.fromAddr)
			case m.From.Name != g.fromName || m.From.Address != g.fromAddr:
				t.Errorf("from %q <%s>, want %q <%s>", m.From.Name, m.From.Address, g.fromName, g.fromAddr)
			}
			addrs := func(l []jsonAddress) []string {
				out := []string{}
				for _, a := range l {
					out = append(out, a.Address)
				}
				return out
			}
			if g.to != nil && !slices.Equal(addrs(m.To), g.to) {
				t.Errorf("to %q, want %q", addrs(m.To), g.to)
			}
			if g.cc != nil && !slices.Equal(addrs(m.Cc), g.cc) {
				t.Errorf("cc %q, want %q", addrs(m.Cc), g.cc)
			}
			if g.replyTo != nil {
				var got []address
				for _, a := range m.ReplyTo {
					got = append(got, address(a))
				}
				if !slices.Equal(got, g.replyTo) {
					t.Errorf("reply_to %q, want %q", got, g.replyTo)
				}
			}
			checkBody(t, "text", m.Text, g.text)
			checkBody(t, "html", m.HTML, g.html)
			if m.TextFromHTML != g.fromHTML {
				t.Errorf("text_from_html %v, want %v", m.TextFromHTML, g.fromHTML)
			}
			var names []string
			for _, a := range m.Attachments {
				names = append(names, a.Filename)
			}
			if !slices.Equal(names, g.atts) {
				t.Errorf("attachments %q, want %q", names, g.atts)
			}
			if m.Date != g.date {
				t.Errorf("date %q, want %q", m.Date, g.date)
			}
			if g.messageID != "" && m.MessageID != g.messageID {
				t.Errorf("message_id %q, want %q", m.MessageID, g.messageID)
			}
			if m.InReplyTo != g.inReplyTo {
				t.Errorf("in_reply_to %q, want %q", m.InReplyTo, g.inReplyTo)
			}
			if g.refs != nil && !slices.Equal(m.References, g.refs) {
				t.Errorf("references %q, want %q", m.References, g.refs)
			}
			if m.AutoSubmitted != g.auto {
				t.Errorf("auto_submitted %v, want %v", m.AutoSubmitted, g.auto)
			}
			for _, e := range g.errs {
				if !slices.ContainsFunc(m.ParseErrors, func(s string) bool { return strings.Contains(s, e) }) {
					t.Errorf("parse_errors %q lack %q", m.ParseErrors, e)
				}
			}
			if g.errs == nil && len(m.ParseErrors) > 0 {
				t.Logf("parse_errors: %q", m.ParseErrors)
			}
		})
	}
}

func checkBody(t *testing.T, field, got string, want []string) {
	t.Helper()
	if want == nil {
		if got != "" {
			t.Errorf("%s = %q, want empty", field, clip(got, 200))
		}
		return
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q; it is %q", field, w, clip(got, 300))
		}
	}
}
