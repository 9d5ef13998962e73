package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Integration is one shop that posts its events to POST /webhooks/{name}
// (docs/integrations.md).
type Integration struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Secrets sign the shop's deliveries; more than one while rotating.
	Secrets []string `yaml:"secrets"`
	Site    string   `yaml:"site"`
	// OrderPrefix goes before the shop's order id in order_number; default
	// "<name>-".
	OrderPrefix string `yaml:"order_prefix"`
	// CourseMode is the mode of a course line whose product names none.
	CourseMode string             `yaml:"course_mode"`
	Products   map[string]Product `yaml:"products"`
	// LearnerEmailField names where the participant's email is when it is
	// not the buyer's: a line-item meta key (WooCommerce), a line property
	// (Shopify) or a Checkout Session metadata key (Stripe).
	LearnerEmailField string `yaml:"learner_email_field"`
	// EnrollUnregistered registers an enrollment_allowed for an email
	// without an LMS account and waits for the account; false fails the
	// line. Default true (UnmarshalYAML): a shop's buyer pays first and
	// registers later.
	EnrollUnregistered bool `yaml:"enroll_unregistered"`
	// AcceptTestOrders enrolls for orders the shop marks as tests (Shopify
	// test: true, Stripe livemode: false); they are ignored by default.
	AcceptTestOrders bool `yaml:"accept_test_orders"`
	// Stripe: the secret key that reads Checkout line items, and the API's
	// base URL.
	APIKey string `yaml:"api_key"`
	APIURL string `yaml:"api_url"`
	// WooCommerce REST API credentials, for what calls the store back
	// (woocommerce.complete_order, the line items of a partial refund).
	ConsumerKey    string `yaml:"consumer_key"`
	ConsumerSecret string `yaml:"consumer_secret"`
}

// UnmarshalYAML reads an integration over its defaults that YAML cannot
// tell from an absent key (enroll_unregistered: true).
func (in *Integration) UnmarshalYAML(n *yaml.Node) error {
	type plain Integration // without this method
	p := plain{EnrollUnregistered: true}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*in = Integration(p)
	return nil
}

// Product is what a shop product (SKU, product, variant or price id) sells:
// one item, or a list of them (a bundle of course runs, a program of
// courses). In YAML a value is one item or a list of items.
type Product []ProductItem

// ProductItem is a course run (course_id: a seat) or a course (course_uuid:
// an entitlement), and the mode it sells (empty: the integration's
// course_mode).
type ProductItem struct {
	CourseID   string `yaml:"course_id"`
	CourseUUID string `yaml:"course_uuid"`
	Mode       string `yaml:"mode"`
}

// UnmarshalYAML reads one item or a list of items.
func (p *Product) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var items []ProductItem
		if err := n.Decode(&items); err != nil {
			return err
		}
		*p = items
		return nil
	}
	var it ProductItem
	if err := n.Decode(&it); err != nil {
		return err
	}
	*p = Product{it}
	return nil
}

// DefaultIntegrationMode is integrations[].course_mode's default: shops sell
// paid seats.
const DefaultIntegrationMode = "verified"

// MinWebhookSecretBytes is the shortest signing secret accepted: shops
// generate long ones, and a short one could be guessed to forge paid orders.
const MinWebhookSecretBytes = 16

var integrationName = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// normalizeIntegrations drops secrets that expanded to nothing (a rotation's
// old secret left unset) and fills in defaults.
func (c *Config) normalizeIntegrations() {
	for i := range c.Integrations {
		in := &c.Integrations[i]
		in.Secrets = slices.DeleteFunc(in.Secrets, func(s string) bool { return strings.TrimSpace(s) == "" })
		if in.Site == "" {
			in.Site = fulfillment.DefaultSite
		}
		if in.OrderPrefix == "" {
			in.OrderPrefix = in.Name + "-"
		}
		if in.CourseMode == "" {
			in.CourseMode = DefaultIntegrationMode
		}
	}
}

// validateIntegrations checks the integrations: section.
func (c *Config) validateIntegrations() error {
	names := map[string]bool{}
	type prefixOf struct{ name, site, prefix string }
	var prefixes []prefixOf
	for i, in := range c.Integrations {
		k := fmt.Sprintf("integrations[%d]", i)
		switch {
		case !integrationName.MatchString(in.Name):
			return valueErr(k+".name", in.Name, "must be 1-32 of a-z, 0-9, '_' and '-' (it is the path /webhooks/<name>)")
		case names[in.Name]:
			return valueErr(k+".name", in.Name, "is used by another integration")
		}
		names[in.Name] = true
		// The type, and the keys only some types use, are checked by the
		// shop adapters (shop.CheckIntegration): they own their names.
		if in.Type == "" {
			return keyErr(k+".type", "required")
		}
		if len(in.Secrets) == 0 {
			return keyErr(k+".secrets", "required: at least one signing secret (entries that expand to nothing are dropped)")
		}
		for j, s := range in.Secrets {
			if len(s) < MinWebhookSecretBytes && !c.dev {
				return keyErr(fmt.Sprintf("%s.secrets[%d]", k, j), "is shorter than %d bytes: use the secret the shop generated (COORDINATOR_DEV=1 accepts it for a local trial)", MinWebhookSecretBytes)
			}
		}
		switch {
		case !fulfillment.ValidSiteName(in.Site):
			return valueErr(k+".site", in.Site, "is not a site name")
		case in.Site != fulfillment.DefaultSite && (c.Database.URL == "" || c.Database.SecretKey == ""):
			return valueErr(k+".site", in.Site, "needs the sites table (database.url and database.secret_key); without it only site default exists")
		}
		if p := fulfillment.OrderNumberProblem(in.OrderPrefix + "1"); p != "" || len(in.OrderPrefix) > 64 {
			return keyErr(k+".order_prefix", "must be at most 64 characters with no control characters")
		}
		for _, o := range prefixes {
			switch {
			case o.site != in.Site:
			case o.prefix == in.OrderPrefix:
				return keyErr(k+".order_prefix", "is also %s's on site %s: their order numbers would collide", o.name, in.Site)
			case strings.HasPrefix(o.prefix, in.OrderPrefix), strings.HasPrefix(in.OrderPrefix, o.prefix):
				// "S" + "1-2" is "S1" + "-2": one shop's order number
				// could be another's.
				return keyErr(k+".order_prefix", "%q and %s's %q on site %s: one starts with the other, so their order numbers could collide; use prefixes where neither starts with the other (e.g. %q and %q)",
					in.OrderPrefix, o.name, o.prefix, in.Site, o.name+"-", in.Name+"-")
			}
		}
		prefixes = append(prefixes, prefixOf{in.Name, in.Site, in.OrderPrefix})
		if !fulfillment.ValidMode(in.CourseMode) {
			return valueErr(k+".course_mode", in.CourseMode, "is not a mode slug such as verified or audit")
		}
		if err := validateProducts(k+".products", in.Products); err != nil {
			return err
		}
		if len(in.LearnerEmailField) > 255 || strings.ContainsFunc(in.LearnerEmailField, isControl) {
			return keyErr(k+".learner_email_field", "must be at most 255 characters with no control characters")
		}
		if err := validateIntegrationAPI(k, in); err != nil {
			return err
		}
	}
	return nil
}

func validateProducts(k string, products map[string]Product) error {
	keys := make([]string, 0, len(products))
	for key := range products {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		pk := join(k, keyName(key))
		switch {
		case strings.TrimSpace(key) == "":
			return keyErr(pk, "a product key (SKU or id) must not be blank")
		case len(products[key]) == 0:
			return keyErr(pk, "names no item: give {course_id, mode}, {course_uuid, mode} or a list of them")
		case len(products[key]) > MaxProductItems:
			return keyErr(pk, "names more than %d items", MaxProductItems)
		}
		for i, it := range products[key] {
			ik := pk
			if len(products[key]) > 1 {
				ik = fmt.Sprintf("%s[%d]", pk, i)
			}
			switch {
			case it.CourseID != "" && it.CourseUUID != "":
				return keyErr(ik, "give course_id (a course run) or course_uuid (a course), not both")
			case it.CourseUUID != "":
				if _, ok := fulfillment.CourseUUID(it.CourseUUID); !ok {
					return valueErr(ik+".course_uuid", it.CourseUUID, "is not a course UUID (32 hexadecimal digits)")
				}
			case !fulfillment.ValidCourseKey(it.CourseID):
				return valueErr(ik+".course_id", it.CourseID, "is not a course run key such as course-v1:edX+DemoX+Demo_Course")
			}
			if it.Mode != "" && !fulfillment.ValidMode(it.Mode) {
				return valueErr(ik+".mode", it.Mode, "is not a mode slug such as verified or audit")
			}
		}
	}
	return nil
}

// MaxProductItems bounds the items one product may name (each is a line,
// and a task, per participant).
const MaxProductItems = 100

// validateIntegrationAPI checks what every type's REST API keys share: an
// api_url is an http(s) URL, and consumer_key and consumer_secret come
// together with it.
func validateIntegrationAPI(k string, in Integration) error {
	if in.APIURL != "" {
		if err := HTTPURL(k+".api_url", in.APIURL); err != nil {
			return err
		}
	}
	switch {
	case (in.ConsumerKey == "") != (in.ConsumerSecret == ""):
		return keyErr(k+".consumer_secret", "set consumer_key and consumer_secret together")
	case in.ConsumerKey != "" && in.APIURL == "":
		return keyErr(k+".api_url", "required with consumer_key: the store's base URL")
	case in.ConsumerKey != "" && !credentialsSafeURL(in.APIURL):
		return keyErr(k+".api_url", "must be https: the consumer key and secret go with every call to the store (plain http only to a loopback address)")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// credentialsSafeURL is CredentialsSafe for a URL not yet parsed.
func credentialsSafeURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && CredentialsSafe(u)
}
