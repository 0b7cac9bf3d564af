/*
 * splitmq_cert_login: a Mosquitto 2.0 plugin that binds a client certificate to a login.
 *
 * With `use_identity_as_username` Mosquitto discards the username and password a client sends
 * before any plugin sees them, so another device's certificate with this device's password is
 * not refused: it silently becomes the certificate's login. This plugin runs instead of that
 * option. On each password check it compares the login the client sends with the common name
 * of the certificate it presented, refuses a mismatch (or no certificate), and defers a match
 * to the next plugin (dynamic security), which then checks the password. A login thus needs
 * both its certificate and its password.
 *
 * Build: cc -shared -fPIC -O2 -o splitmq_cert_login.so cert_login.c -lcrypto
 * (headers from Debian's mosquitto-dev). Load it before the dynamic-security plugin.
 */
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/x509.h>

#define MAX_NAME 256

static mosquitto_plugin_id_t *plugin_id = NULL;

/* The certificate's common name into `out` (NUL-terminated); 0 on success. */
static int common_name(X509 *cert, char *out, int size)
{
	X509_NAME *subject = X509_get_subject_name(cert);
	if(subject == NULL){
		return 1;
	}
	int length = X509_NAME_get_text_by_NID(subject, NID_commonName, out, size);
	/* Refuse a name that is missing, too long, or holds a NUL byte. */
	return (length <= 0 || length >= size || (int)strlen(out) != length) ? 1 : 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	char name[MAX_NAME];
	int rc = MOSQ_ERR_AUTH;
	(void)event;
	(void)userdata;

	X509 *cert = mosquitto_client_certificate(auth->client);
	if(cert == NULL){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "splitmq_cert_login: no client certificate");
		return MOSQ_ERR_AUTH;
	}
	if(common_name(cert, name, sizeof(name)) == 0 && auth->username != NULL
			&& strcmp(name, auth->username) == 0){
		rc = MOSQ_ERR_PLUGIN_DEFER; /* the certificate is this login's: check its password next */
	}else{
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"splitmq_cert_login: refused login %s with the certificate of another name",
				auth->username ? auth->username : "(none)");
	}
	X509_free(cert);
	return rc;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
